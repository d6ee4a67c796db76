use deskbridge_connector::Markup;
use serde_json::{json, Value};

/// Jira wiki markup (Data Center comments, JSM request comments): every character wiki markup
/// gives a meaning is backslash-escaped, and `://` is broken up so no bare URL becomes a link,
/// so ticket text renders as the text typed.
#[derive(Debug, Default, Clone, Copy)]
pub struct WikiMarkup;

impl Markup for WikiMarkup {
    fn escape(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len() + 8);
        for c in text.chars() {
            if "\\*_+-^~?!#|{}[]()".contains(c) {
                out.push('\\');
            }
            out.push(c);
        }
        // A zero-width space inside `://` keeps the text readable but stops auto-linking.
        out.replace("://", ":\u{200B}//")
    }
}

/// Atlassian Document Format (Cloud v3 comments): the comment is built from text nodes only, so
/// nothing in ticket text is ever markup; escaping has nothing to do.
#[derive(Debug, Default, Clone, Copy)]
pub struct AdfMarkup;

impl Markup for AdfMarkup {
    fn escape(&self, text: &str) -> String {
        text.to_owned()
    }
}

/// An ADF document with one paragraph per line, each line a single text node (no marks, no
/// links: the text is inserted as text, never parsed as markup).
pub fn adf_document(text: &str) -> Value {
    let content: Vec<Value> = text
        .lines()
        .map(|line| {
            if line.is_empty() {
                json!({"type": "paragraph", "content": []})
            } else {
                json!({"type": "paragraph", "content": [{"type": "text", "text": line}]})
            }
        })
        .collect();
    json!({"type": "doc", "version": 1, "content": content})
}

/// The text of an ADF document (text nodes, a line per block), or the string itself.
pub fn adf_plain_text(body: &Value) -> String {
    fn walk(node: &Value, out: &mut String) {
        match node.get("type").and_then(Value::as_str) {
            Some("text") => out.push_str(node.get("text").and_then(Value::as_str).unwrap_or_default()),
            Some("hardBreak") => out.push('\n'),
            _ => {}
        }
        if let Some(children) = node.get("content").and_then(Value::as_array) {
            for child in children {
                walk(child, out);
            }
            if matches!(
                node.get("type").and_then(Value::as_str),
                Some("paragraph" | "heading" | "codeBlock")
            ) {
                out.push('\n');
            }
        }
    }
    match body {
        Value::String(s) => s.clone(),
        other => {
            let mut out = String::new();
            walk(other, &mut out);
            out.trim_end_matches('\n').to_owned()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wiki_markup_in_ticket_text_is_inert() {
        let escaped = WikiMarkup.escape("{color:red}*urgent*{color} [click|https://evil.example] h1. !img.png!");
        let chars: Vec<char> = escaped.chars().collect();
        for (i, c) in chars.iter().enumerate() {
            if "*_+-^~?!#|{}[]()".contains(*c) {
                assert!(i > 0 && chars[i - 1] == '\\', "unescaped {c:?} at {i} in {escaped}");
            }
        }
        assert!(!escaped.contains("https://"), "no bare URL: {escaped}");
        assert!(
            escaped.contains("urgent") && escaped.contains("evil.example"),
            "text kept: {escaped}"
        );
    }

    #[test]
    fn adf_holds_text_only_as_text_nodes() {
        let doc = adf_document("line *one* [x|http://a]\n\nline two");
        assert_eq!(doc["content"].as_array().map(Vec::len), Some(3));
        assert_eq!(doc["content"][0]["content"][0]["text"], "line *one* [x|http://a]");
        assert!(doc["content"][0]["content"][0].get("marks").is_none());
        assert_eq!(adf_plain_text(&doc), "line *one* [x|http://a]\n\nline two");
    }
}
