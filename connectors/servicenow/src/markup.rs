use deskbridge_connector::Markup;

/// ServiceNow journal fields show text as typed, except that `[code]…[/code]` renders its
/// content as HTML. Square brackets in untrusted text become their full-width forms, so no tag
/// (nor a forged idempotency marker) can form, and the text still reads the same.
#[derive(Debug, Default, Clone, Copy)]
pub struct JournalMarkup;

impl Markup for JournalMarkup {
    fn escape(&self, text: &str) -> String {
        text.replace('[', "\u{FF3B}").replace(']', "\u{FF3D}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_tags_in_ticket_text_cannot_form() {
        let escaped = JournalMarkup.escape("[code]<img src=x onerror=alert(1)>[/code] [CoDe]");
        assert!(!escaped.contains('[') && !escaped.contains(']'));
        assert!(escaped.contains("<img src=x onerror=alert(1)>"), "text itself is kept: {escaped}");
    }
}
