//! SCIM filters (RFC 7644 §3.4.2.2): `eq ne co sw ew pr gt ge lt le`, `and`, `or`, `not`,
//! grouping, and complex-attribute filters (`members[value eq "x"]`), evaluated on a resource's
//! JSON with case-insensitive attribute names. String comparison is case-insensitive (the
//! attributes deskbridge filters on are not case-exact), except `id` and `externalId`.

use serde_json::Value;

/// A parsed filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// `attr op value` (`value` is `Null` for `pr`).
    Compare(String, String, Value),
    /// `attr[filter]`.
    Complex(String, Box<Filter>),
    /// `a and b`.
    And(Box<Filter>, Box<Filter>),
    /// `a or b`.
    Or(Box<Filter>, Box<Filter>),
    /// `not (a)`.
    Not(Box<Filter>),
}

struct Parser<'a> {
    text: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.text[self.pos..].starts_with(char::is_whitespace) {
            self.pos += self.text[self.pos..].chars().next().map_or(1, char::len_utf8);
        }
    }

    fn word(&mut self) -> String {
        self.ws();
        let rest = &self.text[self.pos..];
        let end = rest.find(|c: char| c.is_whitespace() || "()[]\"".contains(c)).unwrap_or(rest.len());
        self.pos += end;
        rest[..end].to_owned()
    }

    fn peek_keyword(&mut self, kw: &str) -> bool {
        self.ws();
        let rest = &self.text[self.pos..];
        rest.len() >= kw.len()
            && rest[..kw.len()].eq_ignore_ascii_case(kw)
            && rest[kw.len()..].starts_with(|c: char| c.is_whitespace() || c == '(')
    }

    fn or(&mut self) -> Result<Filter, String> {
        let mut left = self.and()?;
        while self.peek_keyword("or") {
            self.pos += 2;
            left = Filter::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Filter, String> {
        let mut left = self.unary()?;
        while self.peek_keyword("and") {
            self.pos += 3;
            left = Filter::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Filter, String> {
        if self.peek_keyword("not") {
            self.pos += 3;
            return Ok(Filter::Not(Box::new(self.unary()?)));
        }
        self.ws();
        if self.text[self.pos..].starts_with('(') {
            self.pos += 1;
            let inner = self.or()?;
            self.ws();
            if !self.text[self.pos..].starts_with(')') {
                return Err("expected ')'".into());
            }
            self.pos += 1;
            return Ok(inner);
        }
        let attr = self.word();
        if attr.is_empty() {
            return Err(format!("expected an attribute at {}", self.pos));
        }
        if self.text[self.pos..].starts_with('[') {
            self.pos += 1;
            let inner = self.or()?;
            self.ws();
            if !self.text[self.pos..].starts_with(']') {
                return Err("expected ']'".into());
            }
            self.pos += 1;
            return Ok(Filter::Complex(attr, Box::new(inner)));
        }
        let op = self.word().to_ascii_lowercase();
        if op == "pr" {
            return Ok(Filter::Compare(attr, op, Value::Null));
        }
        if !["eq", "ne", "co", "sw", "ew", "gt", "ge", "lt", "le"].contains(&op.as_str()) {
            return Err(format!("unsupported operator {op:?}"));
        }
        self.ws();
        let rest = &self.text[self.pos..];
        // The value is a JSON literal: a string with escapes, true/false/null or a number. It
        // may be followed directly by `)` or `]`, so its end is found first.
        let end = if rest.starts_with('"') {
            let mut escaped = false;
            rest.char_indices()
                .skip(1)
                .find(|(_, c)| {
                    let close = *c == '"' && !escaped;
                    escaped = *c == '\\' && !escaped;
                    close
                })
                .map(|(i, _)| i + 1)
                .ok_or("an unterminated string")?
        } else {
            rest.find(|c: char| c.is_whitespace() || c == ')' || c == ']').unwrap_or(rest.len())
        };
        let value: Value = serde_json::from_str(&rest[..end]).map_err(|_| format!("expected a JSON value after {op}"))?;
        self.pos += end;
        Ok(Filter::Compare(attr, op, value))
    }
}

/// Parses a filter; an error is the `invalidFilter` detail.
pub fn parse(text: &str) -> Result<Filter, String> {
    let mut p = Parser { text, pos: 0 };
    let f = p.or()?;
    p.ws();
    if p.pos != text.len() {
        return Err(format!("unexpected {:?}", &text[p.pos..]));
    }
    Ok(f)
}

fn get_ci<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.as_object()?.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v)
}

/// Every value at `path` (dotted; multi-valued attributes fan out).
fn values<'a>(resource: &'a Value, path: &str) -> Vec<&'a Value> {
    let mut current = vec![resource];
    for part in path.split('.') {
        let mut next = Vec::new();
        for v in current {
            match get_ci(v, part) {
                Some(Value::Array(items)) => next.extend(items.iter()),
                Some(other) => next.push(other),
                None => {}
            }
        }
        current = next;
    }
    // A multi-valued attribute compared directly means its `value` sub-attributes.
    current
        .into_iter()
        .map(|v| if v.is_object() { get_ci(v, "value").unwrap_or(v) } else { v })
        .collect()
}

fn compare(found: &Value, op: &str, wanted: &Value, case_exact: bool) -> bool {
    match (found, wanted) {
        (Value::String(a), Value::String(b)) => {
            let (a, b) = if case_exact {
                (a.clone(), b.clone())
            } else {
                (a.to_lowercase(), b.to_lowercase())
            };
            match op {
                "eq" => a == b,
                "ne" => a != b,
                "co" => a.contains(&b),
                "sw" => a.starts_with(&b),
                "ew" => a.ends_with(&b),
                "gt" => a > b,
                "ge" => a >= b,
                "lt" => a < b,
                "le" => a <= b,
                _ => false,
            }
        }
        (a, b) => match op {
            "eq" => a == b,
            "ne" => a != b,
            _ => false,
        },
    }
}

/// Whether `resource` matches `filter`.
pub fn matches(filter: &Filter, resource: &Value) -> bool {
    match filter {
        Filter::And(a, b) => matches(a, resource) && matches(b, resource),
        Filter::Or(a, b) => matches(a, resource) || matches(b, resource),
        Filter::Not(a) => !matches(a, resource),
        Filter::Complex(attr, inner) => match get_ci(resource, attr) {
            Some(Value::Array(items)) => items.iter().any(|item| matches(inner, item)),
            Some(item) => matches(inner, item),
            None => false,
        },
        Filter::Compare(attr, op, wanted) => {
            let found = values(resource, attr);
            if op == "pr" {
                return found.iter().any(|v| !v.is_null());
            }
            let case_exact = attr.eq_ignore_ascii_case("id") || attr.eq_ignore_ascii_case("externalId");
            if op == "ne" {
                return found.iter().all(|v| compare(v, op, wanted, case_exact));
            }
            found.iter().any(|v| compare(v, op, wanted, case_exact))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn filters_parse_and_match_as_the_rfc_says() {
        let user = json!({"userName": "O\"Neil", "Emails": [{"value": "o@x.example", "type": "work"}], "active": true, "id": "u1"});
        for (f, want) in [
            (r#"userName eq "o\"neil""#, true),
            (r#"emails.value eq "O@X.EXAMPLE""#, true),
            (r#"emails[type eq "work" and value co "@x"]"#, true),
            (r#"userName eq "x" or active eq true"#, true),
            (r#"not (active eq true)"#, false),
            (r#"id eq "U1""#, false),
            (r#"title pr"#, false),
            (r#"USERNAME sw "o""#, true),
        ] {
            assert_eq!(matches(&parse(f).expect(f), &user), want, "{f}");
        }
        let group = json!({"displayName": "g", "members": [{"value": "u1"}, {"value": "u2"}]});
        assert!(matches(&parse(r#"members[value eq "u2"]"#).expect("parses"), &group));
        assert!(parse("userName zz \"a\"").is_err());
        assert!(parse("userName eq").is_err());
        assert!(parse("(userName eq \"a\"").is_err());
    }
}
