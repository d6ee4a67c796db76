use deskbridge_connector::auth::AuthConfig;
use deskbridge_connector::http::HttpSettings;
use deskbridge_connector::webhook::WebhookConfig;
use serde::Deserialize;

/// One ServiceNow instance (`[[connectors]]` with `kind = "servicenow"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceNowConfig {
    /// The instance URL, e.g. `https://acme.service-now.com`.
    #[serde(deserialize_with = "deskbridge_connector::urls::http_url")]
    pub base_url: url::Url,
    /// Credentials of the integration user.
    pub auth: AuthConfig,
    /// The table polled for access requests.
    #[serde(default = "default_table")]
    pub table: String,
    /// An encoded query ANDed to every poll (e.g. `cat_item.category=access`). It must not
    /// contain `ORDERBY`, `^NQ` or `^OR`, which would break the cursor.
    #[serde(default)]
    pub filter: Option<String>,
    /// Fields read from each record (dot-walking allowed). `sys_id`, `number`,
    /// `sys_updated_on` and `sys_mod_count` are always added.
    #[serde(default = "default_fields")]
    pub fields: Vec<String>,
    /// Records per page (`sysparm_limit`).
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    /// Seconds behind now that polling stops, so transactions in flight with earlier
    /// timestamps commit before their second is read.
    #[serde(default = "default_lag")]
    pub lag_secs: u64,
    /// Journal field that decisions are written to.
    #[serde(default)]
    pub comment_field: CommentField,
    /// Read catalog variables (`sc_item_option_mtom`) for each page.
    #[serde(default = "yes")]
    pub read_variables: bool,
    /// Read recorded approvals (`sysapproval_approver`) for each page; informational only.
    #[serde(default = "yes")]
    pub read_approvals: bool,
    /// Roles that give the integration user write access to the comment field; the start-up
    /// check requires one of them (read from `sys_user_has_role`).
    #[serde(default = "default_write_roles")]
    pub write_roles: Vec<String>,
    /// Transport settings.
    #[serde(default)]
    pub http: HttpSettings,
    /// Signed deliveries from a business rule (outbound REST) to `deskbridge serve`
    /// `/webhooks/<id>`: `{"sys_id": "..."}` signed with HMAC-SHA256 over the body in
    /// `signature_header` (default `X-Deskbridge-Signature`). Polling stays on.
    #[serde(default)]
    pub webhook: Option<WebhookConfig>,
}

/// The journal field comments go to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommentField {
    /// Internal notes, visible to fulfillers only (the default).
    #[default]
    WorkNotes,
    /// Additional comments, visible to the requester.
    Comments,
}

impl CommentField {
    /// The field name in the Table API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::WorkNotes => "work_notes",
            Self::Comments => "comments",
        }
    }
}

fn default_write_roles() -> Vec<String> {
    ["itil", "sn_request_write", "admin"].map(String::from).to_vec()
}

fn default_table() -> String {
    "sc_req_item".into()
}
fn default_page_size() -> u32 {
    500
}
fn default_lag() -> u64 {
    60
}
fn yes() -> bool {
    true
}

/// The default field list: everything the shipped `sc_req_item` mapping reads.
pub fn default_fields() -> Vec<String> {
    [
        "sys_id",
        "number",
        "short_description",
        "description",
        "state",
        "stage",
        "approval",
        "urgency",
        "cat_item.name",
        "request.number",
        "request.requested_for.user_name",
        "request.requested_for.name",
        "request.requested_for.email",
        "opened_by.user_name",
        "opened_by.name",
        "opened_by.email",
        "assignment_group.name",
        "sys_created_on",
        "sys_updated_on",
        "sys_mod_count",
    ]
    .into_iter()
    .map(String::from)
    .collect()
}

impl ServiceNowConfig {
    /// Checks what serde cannot: every problem, each naming its key.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(filter) = &self.filter {
            let upper = filter.to_ascii_uppercase();
            if upper.contains("ORDERBY") || upper.contains("^NQ") || upper.contains("^OR") {
                problems.push("filter: must not contain ORDERBY, ^NQ or ^OR (the poll cursor orders the query)".into());
            }
        }
        if !(1..=10_000).contains(&self.page_size) {
            problems.push(format!("page_size: {} is outside 1..=10000", self.page_size));
        }
        if !matches!(self.base_url.scheme(), "https" | "http") {
            problems.push(format!("base_url: scheme {} is not http or https", self.base_url.scheme()));
        }
        if !self.table.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') || self.table.is_empty() {
            problems.push(format!("table: {:?} is not a table name", self.table));
        }
        problems
    }
}
