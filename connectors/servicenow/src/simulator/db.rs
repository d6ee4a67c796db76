//! The simulator's tables: string-valued records, references between tables, dot-walking and
//! the Table API's value rendering (`sysparm_display_value`, reference links).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::{json, Map, Value};

pub type Record = BTreeMap<String, String>;

/// `(table, field) → referenced table`.
pub fn reference_target(table: &str, field: &str) -> Option<&'static str> {
    Some(match (table, field) {
        ("sc_req_item", "request") => "sc_request",
        ("sc_req_item", "cat_item") => "sc_cat_item",
        ("sc_req_item" | "sc_request", "opened_by" | "requested_for") => "sys_user",
        ("sc_req_item" | "sc_request", "assignment_group") => "sys_user_group",
        ("sc_item_option_mtom", "request_item") => "sc_req_item",
        ("sc_item_option_mtom", "sc_item_option") => "sc_item_option",
        ("sc_item_option", "item_option_new") => "item_option_new",
        ("sysapproval_approver", "approver") => "sys_user",
        ("sysapproval_approver", "sysapproval") => "sc_req_item",
        ("sys_user_group", "manager") => "sys_user",
        ("sys_user_has_role", "user") => "sys_user",
        ("sys_user_has_role", "role") => "sys_user_role",
        _ => return None,
    })
}

/// The field shown as a record's display value.
pub fn display_field(table: &str) -> &'static str {
    match table {
        "sc_request" | "sc_req_item" => "number",
        "item_option_new" => "question_text",
        "sc_item_option" => "value",
        "sys_journal_field" | "sc_item_option_mtom" | "sysapproval_approver" => "sys_id",
        _ => "name",
    }
}

/// Write-only journal fields: appended to `sys_journal_field`, read back as `""`.
pub fn journal_fields(table: &str) -> &'static [&'static str] {
    match table {
        "sc_req_item" | "sc_request" => &["work_notes", "comments"],
        _ => &[],
    }
}

/// The label an instance shows for a choice field's stored value (`sysparm_display_value`).
pub fn choice_label(table: &str, field: &str, value: &str) -> Option<&'static str> {
    Some(match (table, field, value) {
        ("sc_req_item" | "sc_request", "state", "-5") => "Pending",
        ("sc_req_item" | "sc_request", "state", "1") => "Open",
        ("sc_req_item" | "sc_request", "state", "2") => "Work in Progress",
        ("sc_req_item" | "sc_request", "state", "3") => "Closed Complete",
        ("sc_req_item" | "sc_request", "state", "4") => "Closed Incomplete",
        ("sc_req_item" | "sc_request", "state", "7") => "Closed Skipped",
        (_, "approval" | "state", "requested") => "Requested",
        (_, "approval" | "state", "approved") => "Approved",
        (_, "approval" | "state", "rejected") => "Rejected",
        (_, "approval", "not requested") => "Not Yet Requested",
        ("sysapproval_approver", "state", "not_required") => "No Longer Required",
        (_, "urgency", "1") => "1 - High",
        (_, "urgency", "2") => "2 - Medium",
        (_, "urgency", "3") => "3 - Low",
        (_, "priority", "1") => "1 - Critical",
        (_, "priority", "2") => "2 - High",
        (_, "priority", "3") => "3 - Moderate",
        (_, "priority", "4") => "4 - Low",
        (_, "priority", "5") => "5 - Planning",
        _ => return None,
    })
}

/// Task tables carry `active`: true while the state is open (pending, open, work in
/// progress), false once closed. A record that does not set it gets it from its state.
fn derived_active(table: &str, record: &Record) -> Option<String> {
    if !matches!(table, "sc_req_item" | "sc_request") || record.contains_key("active") {
        return None;
    }
    let open = matches!(record.get("state").map(String::as_str), None | Some("-5" | "1" | "2"));
    Some(open.to_string())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Display {
    False,
    True,
    All,
}

/// Reference fields looked up by value (a ticket's variables, approvals and journal): each
/// table keeps an index of them, so a lookup reads the matching rows, not the whole table.
pub const INDEXED_FIELDS: &[&str] = &["element_id", "request_item", "sysapproval"];

#[derive(Debug, Default)]
pub struct Table {
    pub rows: Vec<Record>,
    index: HashMap<String, usize>,
    /// `field → value → row positions` for [`INDEXED_FIELDS`]; rebuilt after a row was handed
    /// out for change ([`Table::get_mut`]).
    by_value: HashMap<&'static str, HashMap<String, Vec<usize>>>,
    stale: bool,
    /// `(sys_updated_on, sys_id) → row position`: the order a poll reads, so a page costs its
    /// own size (see [`Table::updated_from`]). Kept up to date at [`Table::refresh`] for the
    /// rows handed out for change since.
    by_update: BTreeMap<(String, String), usize>,
    /// Rows handed out for change (or replaced) since the last refresh, with their key then.
    moved: Vec<(usize, (String, String))>,
    /// Every column any row has had, plus the columns an empty table declares.
    pub columns: BTreeSet<String>,
}

/// A row's key in [`Table::by_update`].
fn update_key(record: &Record) -> (String, String) {
    (
        record.get("sys_updated_on").cloned().unwrap_or_default(),
        record.get("sys_id").cloned().unwrap_or_default(),
    )
}

impl Table {
    pub fn get(&self, sys_id: &str) -> Option<&Record> {
        self.index.get(sys_id).map(|&i| &self.rows[i])
    }

    pub fn get_mut(&mut self, sys_id: &str) -> Option<&mut Record> {
        let i = *self.index.get(sys_id)?;
        // The caller may change an indexed field.
        self.stale = !self.by_value.is_empty();
        self.moved.push((i, update_key(&self.rows[i])));
        Some(&mut self.rows[i])
    }

    pub fn insert(&mut self, record: Record) {
        let id = record.get("sys_id").cloned().unwrap_or_default();
        self.columns.extend(record.keys().cloned());
        match self.index.get(&id) {
            Some(&i) => {
                self.moved.push((i, update_key(&self.rows[i])));
                self.rows[i] = record;
                self.stale = true;
            }
            None => {
                let i = self.rows.len();
                self.index.insert(id, i);
                self.by_update.insert(update_key(&record), i);
                for field in INDEXED_FIELDS {
                    if let Some(value) = record.get(*field) {
                        self.by_value.entry(field).or_default().entry(value.clone()).or_default().push(i);
                    }
                }
                self.rows.push(record);
            }
        }
    }

    /// The rows whose `field` is one of `values`, in table order; `None` when `field` is not
    /// indexed.
    /// `None` too while the index is stale (see [`Table::refresh`]).
    pub fn rows_where<'a>(&'a self, field: &str, values: impl Iterator<Item = &'a str>) -> Option<Vec<&'a Record>> {
        if field == "sys_id" {
            let mut at: Vec<usize> = values.filter_map(|v| self.index.get(v).copied()).collect();
            at.sort_unstable();
            at.dedup();
            return Some(at.into_iter().map(|i| &self.rows[i]).collect());
        }
        let field = *INDEXED_FIELDS.iter().find(|f| **f == field)?;
        if self.stale {
            return None;
        }
        let index = self.by_value.get(field);
        let mut at: Vec<usize> = values
            .flat_map(|v| index.and_then(|m| m.get(v)).into_iter().flatten().copied())
            .collect();
        at.sort_unstable();
        at.dedup();
        Some(at.into_iter().map(|i| &self.rows[i]).collect())
    }

    /// The rows from `(updated, "")` on in `(sys_updated_on, sys_id)` order, while
    /// `sys_updated_on` stays at or below `through` (valid after [`Table::refresh`]).
    pub fn updated_from<'a>(&'a self, updated: &str, through: Option<&'a str>) -> impl Iterator<Item = &'a Record> + 'a {
        self.by_update
            .range((updated.to_owned(), String::new())..)
            .take_while(move |((at, _), _)| through.is_none_or(|through| at.as_str() <= through))
            .map(|(_, &i)| &self.rows[i])
    }

    /// Brings the indexes up to date with rows changed since they were built: the
    /// `(sys_updated_on, sys_id)` order for the rows handed out for change, and the index of
    /// [`INDEXED_FIELDS`] (rebuilt) if one of those may have changed.
    pub fn refresh(&mut self) {
        for (i, old) in std::mem::take(&mut self.moved) {
            if self.by_update.get(&old) == Some(&i) {
                self.by_update.remove(&old);
            }
            self.by_update.insert(update_key(&self.rows[i]), i);
        }
        if !self.stale {
            return;
        }
        self.by_value.clear();
        for (i, record) in self.rows.iter().enumerate() {
            for field in INDEXED_FIELDS {
                if let Some(value) = record.get(*field) {
                    self.by_value.entry(field).or_default().entry(value.clone()).or_default().push(i);
                }
            }
        }
        self.stale = false;
    }
}

#[derive(Debug, Default)]
pub struct Db {
    pub tables: BTreeMap<String, Table>,
}

impl Db {
    pub fn table(&self, name: &str) -> Option<&Table> {
        self.tables.get(name)
    }

    /// Whether `path` (dot-walked through references) names a column.
    pub fn field_exists(&self, table: &str, path: &str) -> bool {
        let mut table = table.to_owned();
        let mut parts = path.split('.').peekable();
        while let Some(part) = parts.next() {
            let known = journal_fields(&table).contains(&part) || self.tables.get(&table).is_some_and(|t| t.columns.contains(part));
            if !known {
                return false;
            }
            if parts.peek().is_some() {
                match reference_target(&table, part) {
                    Some(next) => table = next.to_owned(),
                    None => return false,
                }
            }
        }
        true
    }

    /// Walks `path` from `record`; returns the owning table, the last field name and its raw value.
    pub fn resolve<'a>(&'a self, table: &'a str, record: &'a Record, path: &'a str) -> Option<(&'a str, &'a str, String)> {
        let mut table: &str = table;
        let mut record = record;
        let mut parts = path.split('.').peekable();
        while let Some(part) = parts.next() {
            if parts.peek().is_none() {
                let value = if journal_fields(table).contains(&part) {
                    String::new()
                } else if let Some(active) = (part == "active").then(|| derived_active(table, record)).flatten() {
                    active
                } else {
                    record.get(part)?.clone()
                };
                return Some((table, part, value));
            }
            let target = reference_target(table, part)?;
            let id = record.get(part)?;
            record = self.tables.get(target)?.get(id)?;
            table = target;
        }
        None
    }

    /// The raw value of a (dot-walked) field, `""` when it does not resolve.
    pub fn raw(&self, table: &str, record: &Record, path: &str) -> String {
        self.resolve(table, record, path).map(|(_, _, v)| v).unwrap_or_default()
    }

    fn display_of(&self, table: &str, id: &str) -> String {
        self.tables
            .get(table)
            .and_then(|t| t.get(id))
            .and_then(|r| r.get(display_field(table)))
            .cloned()
            .unwrap_or_default()
    }

    /// Renders one record as the Table API does.
    pub fn render(
        &self,
        table: &str,
        record: &Record,
        fields: Option<&[String]>,
        display: Display,
        exclude_link: bool,
        base: &str,
    ) -> Map<String, Value> {
        let all: Vec<String>;
        let fields = match fields {
            Some(f) => f,
            None => {
                all = record
                    .keys()
                    .cloned()
                    .chain(derived_active(table, record).map(|_| "active".to_owned()))
                    .chain(journal_fields(table).iter().map(|s| s.to_string()))
                    .collect();
                &all
            }
        };
        let mut out = Map::new();
        for path in fields {
            let Some((owner, field, value)) = self.resolve(table, record, path) else {
                // Unknown or unresolvable fields come back empty, as on an instance.
                out.insert(path.clone(), Value::String(String::new()));
                continue;
            };
            let rendered = match reference_target(owner, field) {
                Some(target) if !value.is_empty() => {
                    let shown = self.display_of(target, &value);
                    let link = format!("{base}/api/now/table/{target}/{value}");
                    match (display, exclude_link) {
                        (Display::False, true) => json!(value),
                        (Display::False, false) => json!({"link": link, "value": value}),
                        (Display::True, true) => json!(shown),
                        (Display::True, false) => json!({"link": link, "display_value": shown}),
                        (Display::All, true) => json!({"display_value": shown, "value": value}),
                        (Display::All, false) => json!({"display_value": shown, "value": value, "link": link}),
                    }
                }
                _ => {
                    let shown = choice_label(owner, field, &value).map_or_else(|| value.clone(), str::to_owned);
                    match display {
                        Display::All => json!({"display_value": shown, "value": value}),
                        Display::True => json!(shown),
                        Display::False => json!(value),
                    }
                }
            };
            out.insert(path.clone(), rendered);
        }
        out
    }
}
