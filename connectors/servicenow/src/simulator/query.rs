//! The encoded query language of `sysparm_query`: `^` (AND), `^OR`, `^NQ`, the comparison
//! operators, `ORDERBY` and `ORDERBYDESC`. `^^` is a literal `^` inside a value.

use std::cmp::Ordering;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    In,
    NotIn,
    Like,
    NotLike,
    StartsWith,
    EndsWith,
    IsEmpty,
    IsNotEmpty,
}

/// Operators in the order they are tried: longer spellings first.
const OPS: &[(&str, Op)] = &[
    ("!=", Op::Ne),
    (">=", Op::Ge),
    ("<=", Op::Le),
    ("=", Op::Eq),
    (">", Op::Gt),
    ("<", Op::Lt),
    ("NOT IN", Op::NotIn),
    ("IN", Op::In),
    ("NOT LIKE", Op::NotLike),
    ("LIKE", Op::Like),
    ("STARTSWITH", Op::StartsWith),
    ("ENDSWITH", Op::EndsWith),
    ("ISNOTEMPTY", Op::IsNotEmpty),
    ("ISEMPTY", Op::IsEmpty),
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Term {
    pub field: String,
    pub op: Op,
    pub value: String,
    /// The values of `IN` / `NOT IN`, split once at parse time.
    pub set: std::collections::HashSet<String>,
}

/// A parsed query: `alternatives` are `^NQ`-joined; each is an AND of OR-groups.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    pub alternatives: Vec<Vec<Vec<Term>>>,
    pub order: Vec<(String, bool)>,
}

/// Splits on `^`, keeping `^^` as a literal caret.
fn split_carets(s: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '^' {
            current.push(c);
        } else if chars.peek() == Some(&'^') {
            chars.next();
            current.push('^');
        } else {
            parts.push(std::mem::take(&mut current));
        }
    }
    parts.push(current);
    parts
}

fn parse_term(segment: &str) -> Result<Term, String> {
    let field_len = segment
        .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.'))
        .unwrap_or(segment.len());
    let (field, rest) = segment.split_at(field_len);
    if field.is_empty() {
        return Err(format!("no field name in {segment:?}"));
    }
    let (spelling, op) = OPS
        .iter()
        .find(|(spelling, _)| rest.starts_with(spelling))
        .ok_or_else(|| format!("no operator in {segment:?}"))?;
    let value = rest[spelling.len()..].to_owned();
    let set = if matches!(op, Op::In | Op::NotIn) {
        value.split(',').map(str::to_owned).collect()
    } else {
        Default::default()
    };
    Ok(Term {
        field: field.to_owned(),
        op: *op,
        value,
        set,
    })
}

impl Query {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut query = Query {
            alternatives: vec![Vec::new()],
            order: Vec::new(),
        };
        for segment in split_carets(s) {
            let segment = segment.as_str();
            if segment.is_empty() {
                continue;
            }
            if let Some(rest) = segment
                .strip_prefix("NQ")
                .filter(|r| r.is_empty() || r.starts_with(|c: char| c.is_ascii_lowercase()))
            {
                query.alternatives.push(Vec::new());
                if !rest.is_empty() {
                    let term = parse_term(rest)?;
                    query.alternatives.last_mut().ok_or("empty query")?.push(vec![term]);
                }
            } else if let Some(field) = segment.strip_prefix("ORDERBYDESC") {
                query.order.push((field.to_owned(), true));
            } else if let Some(field) = segment.strip_prefix("ORDERBY") {
                query.order.push((field.to_owned(), false));
            } else if segment.starts_with("OR") && segment[2..].starts_with(|c: char| c.is_ascii_lowercase()) {
                let term = parse_term(&segment[2..])?;
                let current = query.alternatives.last_mut().ok_or("empty query")?;
                match current.last_mut() {
                    Some(group) => group.push(term),
                    None => return Err(format!("{segment:?} has nothing to OR with")),
                }
            } else {
                let term = parse_term(segment)?;
                query.alternatives.last_mut().ok_or("empty query")?.push(vec![term]);
            }
        }
        Ok(query)
    }

    /// Every field the query names, for validation.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.alternatives
            .iter()
            .flatten()
            .flatten()
            .map(|t| t.field.as_str())
            .chain(self.order.iter().map(|(f, _)| f.as_str()))
    }

    /// A field every match must equal one of the values of (an `=` or `IN` term standing alone
    /// in an AND of the only alternative), so an index can find the candidates.
    pub fn lookup(&self) -> Option<(&str, Vec<&str>)> {
        let [and] = self.alternatives.as_slice() else {
            return None;
        };
        and.iter().find_map(|or| match or.as_slice() {
            [term] if !term.field.contains('.') => match term.op {
                Op::Eq => Some((term.field.as_str(), vec![term.value.as_str()])),
                Op::In => Some((term.field.as_str(), term.set.iter().map(String::as_str).collect())),
                _ => None,
            },
            _ => None,
        })
    }

    /// For a query that reads rows in `(sys_updated_on, sys_id)` order (a poll: `ORDERBY
    /// sys_updated_on^ORDERBYsys_id`, or `ORDERBYsys_id` with one `sys_updated_on=`), the
    /// `sys_updated_on` range every match lies in: from (inclusive) and through (inclusive),
    /// from its standalone `>`, `>=`, `=`, `<=` and `<` terms. `None` for any other query.
    pub fn update_range(&self) -> Option<(String, Option<String>)> {
        let [and] = self.alternatives.as_slice() else {
            return None;
        };
        let standalone = || {
            and.iter().filter_map(|or| match or.as_slice() {
                [term] if term.field == "sys_updated_on" => Some(term),
                _ => None,
            })
        };
        let by_update = [("sys_updated_on".to_owned(), false), ("sys_id".to_owned(), false)];
        let one_second = standalone().any(|t| t.op == Op::Eq);
        if self.order != by_update && !(one_second && self.order == by_update[1..]) {
            return None;
        }
        let from = standalone()
            .filter(|t| matches!(t.op, Op::Gt | Op::Ge | Op::Eq))
            .map(|t| t.value.clone())
            .max()
            .unwrap_or_default();
        let through = standalone()
            .filter(|t| matches!(t.op, Op::Lt | Op::Le | Op::Eq))
            .map(|t| t.value.clone())
            .min();
        Some((from, through))
    }

    /// Whether a record matches, `get` resolving a (possibly dot-walked) field to its raw value.
    pub fn matches(&self, get: &dyn Fn(&str) -> String) -> bool {
        self.alternatives
            .iter()
            .any(|and| and.iter().all(|or| or.iter().any(|term| term.matches(&get(&term.field)))))
    }
}

/// Compares numerically when both sides are numbers, else as strings (which orders
/// `yyyy-MM-dd HH:mm:ss` timestamps and sys_ids correctly). A number is at most
/// [`NUMBER_DIGITS`] characters: a 32-character sys_id made only of decimal digits (as the
/// seeded ones are) is text, compared as ServiceNow compares a GUID, not a float that rounds
/// neighbouring ids to one value.
pub fn compare(a: &str, b: &str) -> Ordering {
    let number = |s: &str| Some(s).filter(|s| s.len() <= NUMBER_DIGITS).and_then(|s| s.parse::<f64>().ok());
    match (number(a), number(b)) {
        (Some(x), Some(y)) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
        _ => a.cmp(b),
    }
}

/// The longest value [`compare`] takes for a number: a double holds every integer of 15 digits.
const NUMBER_DIGITS: usize = 15;

impl Term {
    fn matches(&self, actual: &str) -> bool {
        let v = self.value.as_str();
        let lower = |s: &str| s.to_lowercase();
        match self.op {
            Op::Eq => actual == v,
            Op::Ne => actual != v,
            Op::Gt => compare(actual, v) == Ordering::Greater,
            Op::Ge => compare(actual, v) != Ordering::Less,
            Op::Lt => compare(actual, v) == Ordering::Less,
            Op::Le => compare(actual, v) != Ordering::Greater,
            Op::In => self.set.contains(actual),
            Op::NotIn => !self.set.contains(actual),
            Op::Like => lower(actual).contains(&lower(v)),
            Op::NotLike => !lower(actual).contains(&lower(v)),
            Op::StartsWith => lower(actual).starts_with(&lower(v)),
            Op::EndsWith => lower(actual).ends_with(&lower(v)),
            Op::IsEmpty => actual.is_empty(),
            Op::IsNotEmpty => !actual.is_empty(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> String + 'a {
        move |f| pairs.iter().find(|(k, _)| *k == f).map(|(_, v)| v.to_string()).unwrap_or_default()
    }

    #[test]
    fn the_keyset_queries_parse_and_match() {
        let q = Query::parse("sys_updated_on=2026-11-20 09:00:00^sys_id>b^ORDERBYsys_id").expect("parses");
        assert_eq!(q.order, vec![("sys_id".to_string(), false)]);
        assert!(q.matches(&get(&[("sys_updated_on", "2026-11-20 09:00:00"), ("sys_id", "c")])));
        assert!(!q.matches(&get(&[("sys_updated_on", "2026-11-20 09:00:00"), ("sys_id", "a")])));
    }

    #[test]
    fn or_nq_in_like_and_escaped_carets_work() {
        let q = Query::parse("state=1^ORstate=2^short_descriptionLIKEa^^b^NQnumberINX,Y").expect("parses");
        assert!(q.matches(&get(&[("state", "2"), ("short_description", "xA^By")])));
        assert!(!q.matches(&get(&[("state", "3"), ("short_description", "a^b")])));
        assert!(q.matches(&get(&[("number", "Y")])));
    }

    #[test]
    fn numbers_compare_as_numbers() {
        let q = Query::parse("sys_mod_count>9").expect("parses");
        assert!(q.matches(&get(&[("sys_mod_count", "10")])));
    }

    #[test]
    fn sys_ids_of_digits_only_compare_as_text() {
        // As f64 both are 2.1e28: the keyset drain of a second skipped the seeded items after
        // the page's last one.
        let q = Query::parse("sys_id>00210000000000000000000000000002").expect("parses");
        assert!(q.matches(&get(&[("sys_id", "00210000000000000000000000000003")])));
        assert!(!q.matches(&get(&[("sys_id", "00210000000000000000000000000001")])));
    }

    #[test]
    fn a_term_without_operator_is_rejected() {
        assert!(Query::parse("bogus").is_err());
    }
}
