//! ServiceNow encoded queries (`sysparm_query`), built term by term, never by pasting text.
//!
//! An encoded query is terms joined by `^`; `^OR`, `^NQ` and `ORDERBY` change its meaning, and
//! a value beginning `javascript:` is run as a script on the instance. ServiceNow has no escape
//! for any of these, so a value that could act as one is refused, not sent: no value — a sys_id
//! from a webhook, a timestamp from a record, a marker — can add a term, an OR, an ordering or a
//! script. The admin's `filter` is checked once, at load, and always comes first.

use std::fmt;

/// A value that would change the query's meaning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadValue {
    /// The field it was for.
    pub field: String,
    /// Why it was refused.
    pub why: &'static str,
}

impl fmt::Display for BadValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a value for {} {}; refusing to build the query", self.field, self.why)
    }
}

/// An encoded query under construction.
#[derive(Debug, Clone, Default)]
pub struct Query {
    terms: Vec<String>,
}

/// Why `value` cannot be a value in an encoded query, if it cannot.
fn refuse(value: &str, in_list: bool) -> Option<&'static str> {
    if value.contains('^') {
        return Some("contains ^, which would start another term");
    }
    if value.chars().any(char::is_control) {
        return Some("contains a control character");
    }
    if in_list && value.contains(',') {
        return Some("contains a comma, which would add another value to the list");
    }
    if value.trim_start().to_ascii_lowercase().starts_with("javascript:") {
        return Some("starts with javascript:, which the instance would run as a script");
    }
    None
}

fn field_ok(field: &str) -> bool {
    !field.is_empty() && field.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
}

impl Query {
    /// An empty query that starts with the admin's filter, if any (checked at load).
    pub fn new(filter: Option<&str>) -> Self {
        let terms = filter
            .map(str::trim)
            .filter(|f| !f.is_empty())
            .map(|f| vec![f.to_owned()])
            .unwrap_or_default();
        Self { terms }
    }

    fn term(mut self, field: &str, op: &str, value: &str) -> Result<Self, BadValue> {
        if !field_ok(field) {
            return Err(BadValue {
                field: field.to_owned(),
                why: "is not for a plain field name",
            });
        }
        if let Some(why) = refuse(value, false) {
            return Err(BadValue {
                field: field.to_owned(),
                why,
            });
        }
        self.terms.push(format!("{field}{op}{value}"));
        Ok(self)
    }

    /// `field=value`.
    pub fn eq(self, field: &str, value: &str) -> Result<Self, BadValue> {
        self.term(field, "=", value)
    }

    /// `field>value`.
    pub fn gt(self, field: &str, value: &str) -> Result<Self, BadValue> {
        self.term(field, ">", value)
    }

    /// `field<=value`.
    pub fn le(self, field: &str, value: &str) -> Result<Self, BadValue> {
        self.term(field, "<=", value)
    }

    /// `fieldLIKEvalue` (contains).
    pub fn like(self, field: &str, value: &str) -> Result<Self, BadValue> {
        self.term(field, "LIKE", value)
    }

    /// `fieldINa,b,c`.
    pub fn one_of(mut self, field: &str, values: &[&str]) -> Result<Self, BadValue> {
        for v in values {
            if let Some(why) = refuse(v, true) {
                return Err(BadValue {
                    field: field.to_owned(),
                    why,
                });
            }
        }
        if !field_ok(field) {
            return Err(BadValue {
                field: field.to_owned(),
                why: "is not for a plain field name",
            });
        }
        self.terms.push(format!("{field}IN{}", values.join(",")));
        Ok(self)
    }

    /// `ORDERBYfield` (ascending).
    pub fn order_by(mut self, field: &'static str) -> Self {
        self.terms.push(format!("ORDERBY{field}"));
        self
    }

    /// The `sysparm_query` text.
    pub fn build(&self) -> String {
        self.terms.join("^")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_query_joins_its_terms() {
        let q = Query::new(Some("active=true"))
            .eq("sys_updated_on", "2026-01-01 00:00:00")
            .and_then(|q| q.gt("sys_id", "abc"))
            .expect("plain values")
            .order_by("sys_id");
        assert_eq!(q.build(), "active=true^sys_updated_on=2026-01-01 00:00:00^sys_id>abc^ORDERBYsys_id");
    }

    #[test]
    fn values_that_would_change_the_query_are_refused() {
        for bad in [
            "x^ORsys_id!=y",
            "x^NQactive=false",
            "a\nb",
            "javascript:gs.getUserID()",
            " JavaScript:1",
        ] {
            assert!(Query::new(None).eq("sys_id", bad).is_err(), "{bad:?}");
        }
        assert!(Query::new(None).one_of("sys_id", &["a", "b,c"]).is_err());
        assert!(Query::new(None).eq("sys_id^OR", "x").is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// Whatever the values, a built query has exactly the terms asked for, each on its own
        /// field: no value adds a term, an OR, an ordering or a script.
        #[test]
        fn no_value_changes_the_meaning(a in ".{0,40}", b in ".{0,40}", list in proptest::collection::vec(".{0,12}", 0..5)) {
            let values: Vec<&str> = list.iter().map(String::as_str).collect();
            let built = Query::new(Some("active=true"))
                .eq("sys_updated_on", &a)
                .and_then(|q| q.like("value", &b))
                .and_then(|q| q.one_of("request_item", &values))
                .map(|q| q.order_by("sys_id").build());
            if let Ok(text) = built {
                let terms: Vec<&str> = text.split('^').collect();
                prop_assert_eq!(terms.len(), 5, "{}", text);
                prop_assert_eq!(terms[0], "active=true");
                prop_assert!(terms[1].starts_with("sys_updated_on="));
                prop_assert!(terms[2].starts_with("valueLIKE"));
                prop_assert!(terms[3].starts_with("request_itemIN"));
                prop_assert_eq!(terms[3].matches(',').count(), values.len().saturating_sub(1));
                prop_assert_eq!(terms[4], "ORDERBYsys_id");
                for term in &terms[1..4] {
                    let value = term.split_once(['=', 'E', 'N']).map(|(_, v)| v).unwrap_or_default();
                    prop_assert!(!value.trim_start().to_ascii_lowercase().starts_with("javascript:"), "{}", text);
                }
            } else {
                let refused = [a.as_str(), b.as_str()].iter().chain(values.iter()).any(|v| refuse(v, false).is_some())
                    || values.iter().any(|v| v.contains(','));
                prop_assert!(refused, "a harmless value was refused: {:?} {:?} {:?}", a, b, values);
            }
        }
    }
}
