//! Text that came from an ITSM, on its way to a terminal or into a comment. Ticket text is
//! hostile: it must not move the cursor, rewrite a line, set a window title, reverse the reading
//! order of what follows it, or hide characters.

/// Bidirectional overrides, embeddings and isolates, and the marks that steer them: they can make
/// a line read differently from what it holds ("Trojan Source").
pub fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}')
}

/// Characters that take no space: text can hide in them, or split a word a reader and a
/// filter see differently.
pub fn is_zero_width(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200D}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}' | '\u{180E}' | '\u{00AD}')
}

/// Whether `c` is unsafe on a terminal or in a comment: a control character (escape, NUL, CR,
/// DEL, C1), a bidi control, or a zero-width character.
pub fn is_hostile(c: char) -> bool {
    c.is_control() || is_bidi_control(c) || is_zero_width(c)
}

/// `text` safe to print: every hostile character except newline and tab becomes a visible
/// `\uXXXX`. Inside JSON strings that is the same character, so JSON output stays valid and
/// means the same.
pub fn for_terminal(text: &str) -> String {
    if !text.chars().any(|c| is_hostile(c) && c != '\n' && c != '\t') {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if is_hostile(c) && c != '\n' && c != '\t' {
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// A writer that passes whole lines through [`for_terminal`]: for output streamed to stdout.
pub struct TerminalLines<W: std::io::Write> {
    inner: W,
    pending: Vec<u8>,
}

impl<W: std::io::Write> TerminalLines<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            pending: Vec::new(),
        }
    }

    fn emit(&mut self, line: &[u8]) -> std::io::Result<()> {
        let text = String::from_utf8_lossy(line);
        self.inner.write_all(for_terminal(&text).as_bytes())
    }
}

impl<W: std::io::Write> std::io::Write for TerminalLines<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.pending.extend_from_slice(buf);
        while let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            self.emit(&line)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.pending.is_empty() {
            let rest = std::mem::take(&mut self.pending);
            self.emit(&rest)?;
        }
        self.inner.flush()
    }
}

impl<W: std::io::Write> Drop for TerminalLines<W> {
    fn drop(&mut self) {
        let _ = std::io::Write::flush(self);
    }
}

/// At most `max` characters of `text`, ending in `…` when shortened.
pub fn cap(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_owned(),
        Some((cut, _)) => {
            let keep = text[..cut].char_indices().nth(max.saturating_sub(1)).map_or(cut, |(i, _)| i);
            format!("{}…", &text[..keep])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_bidi_and_zero_width_become_visible() {
        let role = "viewer\x1b[2K\x1b]0;pwned\x07FAKE-LINE\0\u{202E}txt.exe\u{200B}";
        let safe = for_terminal(role);
        assert!(!safe.chars().any(is_hostile), "{safe:?}");
        assert_eq!(safe, "viewer\\u001b[2K\\u001b]0;pwned\\u0007FAKE-LINE\\u0000\\u202etxt.exe\\u200b");
        assert_eq!(for_terminal("a\n\tb"), "a\n\tb");
        let json = serde_json::json!({"role": "x\u{202E}y"}).to_string();
        let back: serde_json::Value = serde_json::from_str(&for_terminal(&json)).expect("still JSON");
        assert_eq!(back["role"], "x\u{202E}y");
    }

    #[test]
    fn cap_counts_characters() {
        assert_eq!(cap("abcdef", 4), "abc…");
        assert_eq!(cap("abcd", 4), "abcd");
        assert_eq!(cap("ééééé", 3), "éé…");
        assert_eq!(cap("", 0), "");
    }
}
