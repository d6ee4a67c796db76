use deskbridge_connector::auth::AuthConfig;
use deskbridge_connector::http::HttpSettings;
use deskbridge_connector::webhook::WebhookConfig;
use serde::Deserialize;

/// One Jira site (`[[connectors]]` with `kind = "jira"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JiraConfig {
    /// `cloud` (REST v3, enhanced search) or `data_center` (REST v2, `startAt` search).
    #[serde(default)]
    pub deployment: Deployment,
    /// The API base: `https://acme.atlassian.net`, the OAuth gateway
    /// `https://api.atlassian.com/ex/jira/{cloudId}`, or a Data Center URL.
    #[serde(deserialize_with = "deskbridge_connector::urls::http_url")]
    pub base_url: url::Url,
    /// Where people open issues (`<site_url>/browse/KEY`); defaults to `base_url`. Set it when
    /// `base_url` is the OAuth gateway.
    #[serde(default, deserialize_with = "deskbridge_connector::urls::http_url_opt")]
    pub site_url: Option<url::Url>,
    /// Cloud: `basic` with the account email as `username` and an API token as `password`, or
    /// `oauth_refresh` (3LO). Data Center: `bearer` with a personal access token.
    pub auth: AuthConfig,
    /// Project keys polled. The search JQL is always bounded by them.
    pub projects: Vec<String>,
    /// Extra JQL ANDed to every search (e.g. `issuetype = "Service Request"`); no `ORDER BY`.
    #[serde(default)]
    pub jql: Option<String>,
    /// System fields read from each issue; `summary`, `status`, `updated` and `created` are
    /// always added.
    #[serde(default = "default_fields")]
    pub fields: Vec<String>,
    /// Custom fields read, by name as shown in Jira; resolved to this site's `customfield_NNNNN`
    /// ids through `/rest/api/{2,3}/field` at start-up. The JSM request type is always read.
    #[serde(default = "default_custom_fields")]
    pub custom_fields: Vec<String>,
    /// Issues per search page (Cloud at most 100, Data Center at most 1000).
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    /// Seconds each search reaches back before the last drained `updated`, for Jira's eventual
    /// consistency; re-read versions are dropped by (issue id, updated).
    #[serde(default = "default_overlap")]
    pub overlap_secs: u64,
    /// Data Center's result window (`jira.search.platform.max.result.window`); the search is
    /// re-anchored on `updated` before `startAt` reaches it.
    #[serde(default = "default_window")]
    pub result_window: u32,
    /// Where and how decisions are written.
    #[serde(default)]
    pub comments: CommentSettings,
    /// Admin webhook (`X-Hub-Signature: sha256=…`) to `deskbridge serve` `/webhooks/<id>`.
    #[serde(default)]
    pub webhook: Option<WebhookConfig>,
    /// Transport settings.
    #[serde(default)]
    pub http: HttpSettings,
}

/// Which Jira.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Deployment {
    /// Jira Cloud (REST v3).
    #[default]
    Cloud,
    /// Jira Data Center / Server (REST v2).
    DataCenter,
}

/// `[connectors.comments]`.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommentSettings {
    /// `platform` (`/rest/api/{3,2}/issue/{key}/comment`) or `service_desk`
    /// (`/rest/servicedeskapi/request/{key}/comment`).
    #[serde(default)]
    pub api: CommentApi,
    /// `internal` (agents only, the default) or `public` (the customer sees it).
    #[serde(default)]
    pub visibility: Visibility,
}

/// The comment API.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommentApi {
    /// The platform issue-comment API.
    #[default]
    Platform,
    /// The JSM request-comment API.
    ServiceDesk,
}

/// Who sees the comment in JSM.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Visibility {
    /// Agents only.
    #[default]
    Internal,
    /// Also the customer, in the portal.
    Public,
}

fn default_page_size() -> u32 {
    100
}
fn default_overlap() -> u64 {
    120
}
fn default_window() -> u32 {
    10_000
}

/// The system fields the shipped mappings read.
pub fn default_fields() -> Vec<String> {
    [
        "summary",
        "status",
        "issuetype",
        "project",
        "reporter",
        "created",
        "updated",
        "description",
    ]
    .into_iter()
    .map(String::from)
    .collect()
}

/// The custom fields the shipped mappings read.
pub fn default_custom_fields() -> Vec<String> {
    [
        "Access type",
        "Application",
        "Environment",
        "Access role",
        "Privileged access",
        "Business justification",
        "Access duration",
        "Approver",
        "Identity type",
        "Service account name",
        "Service account owner",
        "Service account purpose",
        "Service account expiry",
        "Requested for",
    ]
    .into_iter()
    .map(String::from)
    .collect()
}

impl JiraConfig {
    /// Checks what serde cannot: every problem, each naming its key.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.projects.is_empty() {
            problems.push("projects: at least one project key is needed (it bounds every search)".into());
        }
        for p in &self.projects {
            let ok = p.chars().next().is_some_and(|c| c.is_ascii_uppercase())
                && p.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
            if !ok {
                problems.push(format!("projects: {p:?} is not a Jira project key (A-Z, 0-9, _)"));
            }
        }
        if let Some(jql) = &self.jql {
            if jql.to_ascii_lowercase().contains("order by") {
                problems.push("jql: must not contain ORDER BY (the poll cursor orders the search)".into());
            }
            if jql.matches('(').count() != jql.matches(')').count() || jql.matches('"').count() % 2 != 0 {
                problems.push("jql: unbalanced parentheses or quotes".into());
            }
        }
        let max = match self.deployment {
            Deployment::Cloud => 100,
            Deployment::DataCenter => 1000,
        };
        if !(1..=max).contains(&self.page_size) {
            problems.push(format!("page_size: {} is outside 1..={max}", self.page_size));
        }
        if self.deployment == Deployment::DataCenter && self.result_window <= self.page_size {
            problems.push("result_window: must be larger than page_size".into());
        }
        if !matches!(self.base_url.scheme(), "https" | "http") {
            problems.push(format!("base_url: scheme {} is not http or https", self.base_url.scheme()));
        }
        for name in &self.custom_fields {
            if name.trim().is_empty() {
                problems.push("custom_fields: an empty field name".into());
            }
        }
        if matches!(self.auth, AuthConfig::OauthPassword { .. }) {
            problems.push(
                "auth: oauth_password is not offered by Jira; use basic (Cloud API token), bearer (Data Center PAT) or oauth_refresh (3LO)"
                    .into(),
            );
        }
        problems
    }

    /// `3` on Cloud, `2` on Data Center.
    pub fn api_version(&self) -> &'static str {
        match self.deployment {
            Deployment::Cloud => "3",
            Deployment::DataCenter => "2",
        }
    }
}
