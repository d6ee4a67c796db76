//! The JQL subset the simulator understands: `AND`, `OR`, `NOT`, parentheses, `=`, `!=`, `>`,
//! `>=`, `<`, `<=`, `~`, `IN`, `NOT IN`, on `project`, `key`, `id`, `issuetype`, `status`,
//! `summary`, `text`, `created`, `updated`, with `ORDER BY` up to seven fields. Dates are epoch
//! milliseconds or `"yyyy-MM-dd HH:mm"` / `"yyyy/MM/dd HH:mm"` in UTC (the simulated users'
//! profile time zone). Anything else is a 400, as in Jira.

use std::cmp::Ordering;

use super::Issue;

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Quoted(String),
    Op(String),
    Open,
    Close,
    Comma,
}

fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                out.push(Token::Open);
                i += 1;
            }
            ')' => {
                out.push(Token::Close);
                i += 1;
            }
            ',' => {
                out.push(Token::Comma);
                i += 1;
            }
            '"' | '\'' => {
                let mut s = String::new();
                i += 1;
                while i < chars.len() && chars[i] != c {
                    if chars[i] == '\\' && i + 1 < chars.len() {
                        i += 1;
                    }
                    s.push(chars[i]);
                    i += 1;
                }
                if i >= chars.len() {
                    return Err("Error in the JQL Query: unterminated string".into());
                }
                i += 1;
                out.push(Token::Quoted(s));
            }
            '=' | '!' | '<' | '>' | '~' => {
                let mut op = c.to_string();
                if i + 1 < chars.len() && chars[i + 1] == '=' || (c == '!' && i + 1 < chars.len() && chars[i + 1] == '~') {
                    op.push(chars[i + 1]);
                    i += 1;
                }
                i += 1;
                out.push(Token::Op(op));
            }
            _ => {
                let mut s = String::new();
                while i < chars.len() && !chars[i].is_whitespace() && !"(),=!<>~\"'".contains(chars[i]) {
                    s.push(chars[i]);
                    i += 1;
                }
                out.push(Token::Word(s));
            }
        }
    }
    Ok(out)
}

/// A parsed query.
#[derive(Debug, Clone)]
pub struct Jql {
    filter: Option<Expr>,
    order: Vec<(String, bool)>,
}

#[derive(Debug, Clone)]
enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Cmp(String, String, Vec<String>),
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

fn is_kw(t: Option<&Token>, kw: &str) -> bool {
    matches!(t, Some(Token::Word(w)) if w.eq_ignore_ascii_case(kw))
}

const FIELDS: &[&str] = &[
    "project",
    "key",
    "id",
    "issuetype",
    "type",
    "status",
    "summary",
    "text",
    "created",
    "updated",
];

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }
    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.at).cloned();
        self.at += 1;
        t
    }
    fn expr(&mut self) -> Result<Expr, String> {
        let mut left = self.term()?;
        while is_kw(self.peek(), "or") {
            self.at += 1;
            left = Expr::Or(Box::new(left), Box::new(self.term()?));
        }
        Ok(left)
    }
    fn term(&mut self) -> Result<Expr, String> {
        let mut left = self.factor()?;
        while is_kw(self.peek(), "and") {
            self.at += 1;
            left = Expr::And(Box::new(left), Box::new(self.factor()?));
        }
        Ok(left)
    }
    fn value(&mut self) -> Result<String, String> {
        match self.next() {
            Some(Token::Word(w)) | Some(Token::Quoted(w)) => Ok(w),
            other => Err(format!("Error in the JQL Query: expecting a value but got {other:?}")),
        }
    }
    fn factor(&mut self) -> Result<Expr, String> {
        if is_kw(self.peek(), "not") {
            self.at += 1;
            return Ok(Expr::Not(Box::new(self.factor()?)));
        }
        if self.peek() == Some(&Token::Open) {
            self.at += 1;
            let e = self.expr()?;
            if self.next() != Some(Token::Close) {
                return Err("Error in the JQL Query: expecting ')'".into());
            }
            return Ok(e);
        }
        let field = self.value()?.to_ascii_lowercase();
        if !FIELDS.contains(&field.as_str()) {
            return Err(format!("Field '{field}' does not exist or you do not have permission to view it."));
        }
        let negated_in = is_kw(self.peek(), "not") && is_kw(self.tokens.get(self.at + 1), "in");
        if negated_in {
            self.at += 1;
        }
        if is_kw(self.peek(), "in") {
            self.at += 1;
            if self.next() != Some(Token::Open) {
                return Err("Error in the JQL Query: expecting '(' after IN".into());
            }
            let mut values = vec![self.value()?];
            loop {
                match self.next() {
                    Some(Token::Comma) => values.push(self.value()?),
                    Some(Token::Close) => break,
                    other => return Err(format!("Error in the JQL Query: expecting ',' or ')' but got {other:?}")),
                }
            }
            let cmp = Expr::Cmp(field, "in".into(), values);
            return Ok(if negated_in { Expr::Not(Box::new(cmp)) } else { cmp });
        }
        let op = match self.next() {
            Some(Token::Op(op)) => op,
            other => return Err(format!("Error in the JQL Query: expecting an operator but got {other:?}")),
        };
        let value = self.value()?;
        Ok(Expr::Cmp(field, op, vec![value]))
    }
}

impl Jql {
    /// Parses `text`; `bounded` demands a restriction (the enhanced search refuses unbounded
    /// queries).
    pub fn parse(text: &str, bounded: bool) -> Result<Self, String> {
        let tokens = tokenize(text)?;
        let order_at = tokens
            .windows(2)
            .position(|w| is_kw(Some(&w[0]), "order") && is_kw(Some(&w[1]), "by"));
        let (filter_tokens, order_tokens) = match order_at {
            Some(i) => (tokens[..i].to_vec(), tokens[i + 2..].to_vec()),
            None => (tokens, Vec::new()),
        };
        let filter = if filter_tokens.is_empty() {
            None
        } else {
            let mut p = Parser {
                tokens: filter_tokens,
                at: 0,
            };
            let e = p.expr()?;
            if p.at < p.tokens.len() {
                return Err(format!("Error in the JQL Query: unexpected {:?}", p.tokens[p.at]));
            }
            Some(e)
        };
        if bounded && filter.is_none() {
            return Err("Unbounded JQL queries are not allowed here. Please add a search restriction to your query.".into());
        }
        let mut order = Vec::new();
        let mut i = 0;
        while i < order_tokens.len() {
            let Token::Word(field) = &order_tokens[i] else {
                return Err("Error in the JQL Query: ORDER BY expects a field".into());
            };
            let field = field.to_ascii_lowercase();
            if !FIELDS.contains(&field.as_str()) {
                return Err(format!("Field '{field}' does not exist or you do not have permission to view it."));
            }
            i += 1;
            let mut asc = true;
            if is_kw(order_tokens.get(i), "asc") {
                i += 1;
            } else if is_kw(order_tokens.get(i), "desc") {
                asc = false;
                i += 1;
            }
            order.push((field, asc));
            if order_tokens.get(i) == Some(&Token::Comma) {
                i += 1;
            }
        }
        if order.len() > 7 {
            return Err("The ORDER BY clause may have at most 7 fields.".into());
        }
        Ok(Self { filter, order })
    }

    /// Whether matches are ordered by `updated`, oldest first, before anything else.
    pub fn by_updated_first(&self) -> bool {
        self.order.first().is_some_and(|(field, asc)| field == "updated" && *asc)
    }

    /// The least `updated` a match can have, from `updated >=`, `>` or `=` conditions ANDed at
    /// the top of the filter (`i64::MIN` when there is none, or its date does not parse:
    /// [`Jql::matches`] then reports it).
    pub fn updated_floor(&self) -> i64 {
        fn floor(e: &Expr) -> i64 {
            match e {
                Expr::And(a, b) => floor(a).max(floor(b)),
                Expr::Cmp(field, op, values) if field == "updated" && matches!(op.as_str(), ">=" | ">" | "=") => {
                    values.first().and_then(|v| date_ms(v).ok()).unwrap_or(i64::MIN)
                }
                _ => i64::MIN,
            }
        }
        self.filter.as_ref().map_or(i64::MIN, floor)
    }

    /// Whether `issue` matches.
    pub fn matches(&self, issue: &Issue) -> Result<bool, String> {
        self.filter.as_ref().map_or(Ok(true), |f| eval(f, issue))
    }

    /// Orders two issues as `ORDER BY` says (then by key descending, Jira's default tie order
    /// being unspecified; ours is stable).
    pub fn compare(&self, a: &Issue, b: &Issue) -> Ordering {
        for (field, asc) in &self.order {
            let o = match field.as_str() {
                "updated" => a.updated_ms.cmp(&b.updated_ms),
                "created" => a.created_ms.cmp(&b.created_ms),
                "id" => a.id.cmp(&b.id),
                "key" => (a.project.as_str(), a.number).cmp(&(b.project.as_str(), b.number)),
                "status" => a.status.cmp(&b.status),
                "summary" => a.summary.cmp(&b.summary),
                _ => Ordering::Equal,
            };
            let o = if *asc { o } else { o.reverse() };
            if o != Ordering::Equal {
                return o;
            }
        }
        b.id.cmp(&a.id)
    }
}

fn date_ms(value: &str) -> Result<i64, String> {
    if let Ok(ms) = value.parse::<i64>() {
        return Ok(ms);
    }
    for format in ["%Y-%m-%d %H:%M", "%Y/%m/%d %H:%M"] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(value, format) {
            return Ok(t.and_utc().timestamp_millis());
        }
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).map(|t| t.and_utc().timestamp_millis()).unwrap_or(0));
    }
    Err(format!("Date value '{value}' for field is invalid. Valid formats include: 'yyyy/MM/dd HH:mm', 'yyyy-MM-dd HH:mm', 'yyyy/MM/dd', 'yyyy-MM-dd', or a period format e.g. '-5d', '4w 2d'."))
}

fn eval(e: &Expr, issue: &Issue) -> Result<bool, String> {
    Ok(match e {
        Expr::And(a, b) => eval(a, issue)? && eval(b, issue)?,
        Expr::Or(a, b) => eval(a, issue)? || eval(b, issue)?,
        Expr::Not(a) => !eval(a, issue)?,
        Expr::Cmp(field, op, values) => {
            if matches!(field.as_str(), "created" | "updated") {
                let have = if field == "created" { issue.created_ms } else { issue.updated_ms };
                let want = date_ms(&values[0])?;
                return Ok(match op.as_str() {
                    "=" => have == want,
                    "!=" => have != want,
                    ">" => have > want,
                    ">=" => have >= want,
                    "<" => have < want,
                    "<=" => have <= want,
                    "in" => values.iter().map(|v| date_ms(v)).collect::<Result<Vec<_>, _>>()?.contains(&have),
                    _ => return Err(format!("The operator '{op}' is not supported by the '{field}' field.")),
                });
            }
            let have: String = match field.as_str() {
                "project" => issue.project.clone(),
                "key" => issue.key(),
                "id" => issue.id.to_string(),
                "issuetype" | "type" => issue.issue_type.clone(),
                "status" => issue.status.clone(),
                "summary" | "text" => issue.summary.clone(),
                _ => String::new(),
            };
            let eq = |v: &String| have.eq_ignore_ascii_case(v);
            match op.as_str() {
                "=" => eq(&values[0]),
                "!=" => !eq(&values[0]),
                "in" => values.iter().any(eq),
                "~" => have.to_lowercase().contains(&values[0].to_lowercase()),
                "!~" => !have.to_lowercase().contains(&values[0].to_lowercase()),
                _ => return Err(format!("The operator '{op}' is not supported by the '{field}' field.")),
            }
        }
    })
}
