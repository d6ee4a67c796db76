//! `${VAR}` interpolation of environment variables into the config text, for secrets.
//!
//! Only inside double-quoted strings; the value is escaped for a TOML basic string, so a
//! secret can never change the structure of the file. Unset variables and values with newlines
//! or other control characters are errors naming the line. `$${` writes a literal `${`.

use regex::Regex;

/// The values substituted into a config, so that no error or log line repeats them: a mistake
/// on a secret's line must not print the secret.
#[derive(Clone, Default)]
pub struct Redactor {
    /// `(variable name, value)`, longest value first.
    values: Vec<(String, String)>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.values.iter().map(|(name, _)| format!("${{{name}}}")))
            .finish()
    }
}

impl Redactor {
    /// `text` with every substituted value (as written and as escaped into the file) replaced
    /// by its `${NAME}`, and credentials removed from any URL.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for (name, value) in &self.values {
            let escaped = escape(value);
            for form in [value.as_str(), escaped.as_str()] {
                // Values this short are not secrets, and replacing them would garble the text.
                if form.chars().count() >= 3 {
                    out = out.replace(form, &format!("${{{name}}}"));
                }
            }
        }
        deskbridge_connector::urls::strip_userinfo(&out)
    }
}

fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Interpolates `text`; `lookup` reads a variable. Every problem is reported.
pub fn interpolate(text: &str, file: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<(String, Redactor), Vec<String>> {
    let mut redactor = Redactor::default();
    let pattern = Regex::new(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$\{").expect("static regex");
    let mut problems = Vec::new();
    let mut out = String::with_capacity(text.len());
    for (n, line) in text.split_inclusive('\n').enumerate() {
        let line_no = n + 1;
        let mut last = 0;
        for caps in pattern.captures_iter(line) {
            let m = caps.get(0).expect("whole match");
            out.push_str(&line[last..m.start()]);
            last = m.end();
            let position = position_in_line(&line[..m.start()]);
            if position == Position::Comment {
                out.push_str(m.as_str());
                continue;
            }
            if m.as_str() == "$${" {
                out.push_str("${");
                continue;
            }
            let Some(name) = caps.get(1).map(|g| g.as_str()) else {
                problems.push(format!(
                    "{file}:{line_no}: `${{` must start a variable like ${{NAME}} (write $${{ for a literal)"
                ));
                continue;
            };
            if position != Position::BasicString {
                problems.push(format!("{file}:{line_no}: ${{{name}}} must be inside a double-quoted string"));
                continue;
            }
            match lookup(name) {
                None => problems.push(format!("{file}:{line_no}: environment variable {name} is not set")),
                Some(value) if value.chars().any(char::is_control) => problems.push(format!(
                    "{file}:{line_no}: environment variable {name} contains a newline or control character"
                )),
                Some(value) => {
                    out.push_str(&escape(&value));
                    redactor.values.push((name.to_owned(), value));
                }
            }
        }
        out.push_str(&line[last..]);
    }
    if problems.is_empty() {
        redactor.values.sort_by_key(|(_, v)| std::cmp::Reverse(v.len()));
        Ok((out, redactor))
    } else {
        Err(problems)
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Position {
    Bare,
    BasicString,
    Comment,
}

/// Where the text after `prefix` sits on its line: in a `"…"` string, a comment, or neither.
fn position_in_line(prefix: &str) -> Position {
    let mut inside = false;
    let mut escaped = false;
    for c in prefix.chars() {
        match c {
            '\\' if inside && !escaped => {
                escaped = true;
                continue;
            }
            '"' if !escaped => inside = !inside,
            '#' if !inside => return Position::Comment,
            _ => {}
        }
        escaped = false;
    }
    if inside {
        Position::BasicString
    } else {
        Position::Bare
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "PASS" => Some(r#"p"a\ss"#.into()),
            "MULTI" => Some("a\nb".into()),
            _ => None,
        }
    }

    #[test]
    fn secrets_are_escaped_into_the_string() {
        let (out, redactor) = interpolate("password = \"${PASS}\"\nliteral = \"$${HOME}\"\n", "c.toml", &env).expect("ok");
        assert_eq!(redactor.redact(&out), "password = \"${PASS}\"\nliteral = \"${HOME}\"\n");
        assert_eq!(
            redactor.redact(r#"invalid type: string "p"a\ss""#),
            r#"invalid type: string "${PASS}""#
        );
        assert_eq!(out, "password = \"p\\\"a\\\\ss\"\nliteral = \"${HOME}\"\n");
        let parsed: toml::Table = toml::from_str(&out).expect("valid toml");
        assert_eq!(parsed["password"].as_str(), Some(r#"p"a\ss"#));
    }

    #[test]
    fn comments_are_left_alone() {
        let (out, _) = interpolate("# use ${NOPE} or ${ here\na = \"x\" # ${NOPE}\n", "c.toml", &env).expect("ok");
        assert_eq!(out, "# use ${NOPE} or ${ here\na = \"x\" # ${NOPE}\n");
    }

    #[test]
    fn every_problem_names_its_line() {
        let problems = interpolate("a = \"${NOPE}\"\nb = \"${MULTI}\"\nc = ${PASS}\n", "c.toml", &env).expect_err("problems");
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].starts_with("c.toml:1: environment variable NOPE is not set"));
        assert!(problems[1].starts_with("c.toml:2:") && problems[1].contains("newline"));
        assert!(problems[2].starts_with("c.toml:3:") && problems[2].contains("double-quoted"));
    }
}
