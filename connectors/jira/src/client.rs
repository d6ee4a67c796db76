use std::collections::HashSet;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deskbridge_connector::auth::Auth;
use deskbridge_connector::http::HttpClient;
use deskbridge_connector::webhook::{WebhookEvent, WebhookVerifier};
use deskbridge_connector::{has_marker_line, Comment, CommentId, Connector, ConnectorError, Cursor, FoundComment, Markup, Page, Ticket};
use serde_json::{json, Map, Value};
use tokio::sync::OnceCell;

use crate::config::{CommentApi, Deployment, JiraConfig, Visibility};
use crate::cursor::{JiraCursor, Run};
use crate::markup::{adf_document, adf_plain_text, AdfMarkup, WikiMarkup};

/// The comment property holding deskbridge's idempotency marker.
pub const MARKER_PROPERTY: &str = "deskbridge.marker";
/// The schema of the JSM request-type field.
const REQUEST_TYPE_SCHEMA: &str = "com.atlassian.servicedesk:vp-origin";
/// Jira's timestamp format.
const TIME_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.f%z";
/// Comments per page when looking for a marker.
const COMMENT_PAGE: usize = 100;

/// Custom field ids of this site, resolved by name.
#[derive(Debug, Clone)]
struct Fields {
    /// `(name, id)` of each configured custom field.
    custom: Vec<(String, String)>,
    /// The JSM request-type field, when the site has JSM.
    request_type: Option<String>,
}

/// A Jira site behind the [`Connector`] contract.
pub struct Jira {
    id: String,
    config: JiraConfig,
    http: HttpClient,
    webhook: Option<WebhookVerifier>,
    fields: OnceCell<Fields>,
    me: OnceCell<String>,
}

impl Jira {
    /// Builds the connector `id` from its configuration; every invalid key is reported at once.
    pub fn new(id: &str, config: JiraConfig) -> Result<Self, ConnectorError> {
        ConnectorError::config_problems(id, config.validate())?;
        let auth = Auth::from_config(&config.auth, id)?;
        let http = HttpClient::new(id, config.http.clone(), auth, crate::error_message)?;
        let webhook = config
            .webhook
            .as_ref()
            .map(|w| WebhookVerifier::new(w, "X-Hub-Signature", Some("X-Atlassian-Webhook-Identifier")));
        Ok(Self {
            id: id.to_owned(),
            config,
            http,
            webhook,
            fields: OnceCell::new(),
            me: OnceCell::new(),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.config.base_url.as_str().trim_end_matches('/'))
    }

    fn api(&self, path: &str) -> String {
        self.url(&format!("/rest/api/{}{path}", self.config.api_version()))
    }

    fn permanent(&self, message: String) -> ConnectorError {
        ConnectorError::Permanent {
            connector: self.id.clone(),
            message,
        }
    }

    fn config_error(&self, message: String) -> ConnectorError {
        ConnectorError::Config {
            connector: self.id.clone(),
            message,
        }
    }

    async fn get_json(&self, url: &str, query: &[(&str, String)]) -> Result<Value, ConnectorError> {
        let response = self
            .http
            .send(|c| c.get(url).header("Accept", "application/json").query(query))
            .await?;
        response.json(&self.id)
    }

    /// A POST that only reads (search): retried like any read.
    async fn post_json(&self, url: &str, body: &Value) -> Result<Value, ConnectorError> {
        let response = self
            .http
            .send(|c| c.post(url).header("Accept", "application/json").json(body))
            .await?;
        response.json(&self.id)
    }

    /// A POST that creates something: sent once (see [`Connector::post_comment`]).
    async fn create_json(&self, url: &str, body: &Value) -> Result<Value, ConnectorError> {
        let response = self
            .http
            .send_write(|c| c.post(url).header("Accept", "application/json").json(body))
            .await?;
        response.json(&self.id)
    }

    /// The integration user's account id (`/myself`), read once.
    async fn me(&self) -> Result<&str, ConnectorError> {
        self.me
            .get_or_try_init(|| async {
                let me = self.get_json(&self.api("/myself"), &[]).await?;
                // Data Center identifies users by `key`/`name`; Cloud by `accountId`.
                let id = ["accountId", "key", "name"]
                    .iter()
                    .find_map(|k| me.get(*k).and_then(Value::as_str))
                    .ok_or_else(|| self.permanent("/myself answered without an account id".into()))?;
                Ok::<_, ConnectorError>(id.to_owned())
            })
            .await
            .map(String::as_str)
    }

    /// Resolves the configured custom field names to this site's ids, once. Unknown and
    /// ambiguous names are a configuration error listing them all.
    async fn fields(&self) -> Result<&Fields, ConnectorError> {
        self.fields
            .get_or_try_init(|| async {
                let all = self.get_json(&self.api("/field"), &[]).await?;
                let all = all.as_array().cloned().unwrap_or_default();
                let mut custom = Vec::new();
                let mut problems = Vec::new();
                for name in &self.config.custom_fields {
                    let ids: Vec<&str> = all
                        .iter()
                        .filter(|f| f.get("custom").and_then(Value::as_bool) == Some(true))
                        .filter(|f| f.get("name").and_then(Value::as_str).is_some_and(|n| n.eq_ignore_ascii_case(name)))
                        .filter_map(|f| f.get("id").and_then(Value::as_str))
                        .collect();
                    match ids.as_slice() {
                        [id] => custom.push((name.clone(), (*id).to_owned())),
                        [] => problems.push(format!("{name:?} does not exist or the integration user cannot see it")),
                        many => problems.push(format!("{name:?} is ambiguous ({})", many.join(", "))),
                    }
                }
                if !problems.is_empty() {
                    return Err(self.config_error(format!("custom_fields: {}", problems.join("; "))));
                }
                let request_type = all
                    .iter()
                    .find(|f| f.pointer("/schema/custom").and_then(Value::as_str) == Some(REQUEST_TYPE_SCHEMA))
                    .and_then(|f| f.get("id").and_then(Value::as_str))
                    .map(String::from);
                Ok::<_, ConnectorError>(Fields { custom, request_type })
            })
            .await
    }

    fn field_list(&self, fields: &Fields) -> Vec<String> {
        let mut list = self.config.fields.clone();
        for required in ["summary", "status", "updated", "created"] {
            if !list.iter().any(|f| f == required) {
                list.push(required.into());
            }
        }
        list.extend(fields.custom.iter().map(|(_, id)| id.clone()));
        list.extend(fields.request_type.clone());
        list
    }

    /// `project in (...) [AND (jql)] [AND extra]` — always bounded by the projects.
    fn jql(&self, extra: &[String]) -> String {
        let projects: Vec<String> = self.config.projects.iter().map(|p| format!("\"{p}\"")).collect();
        let mut clauses = vec![format!("project in ({})", projects.join(", "))];
        if let Some(filter) = self.config.jql.as_deref().filter(|j| !j.trim().is_empty()) {
            clauses.push(format!("({filter})"));
        }
        clauses.extend(extra.iter().cloned());
        clauses.join(" AND ")
    }

    /// One search page: `(issues, next page token or None)`; Data Center pages by `start_at`.
    async fn search(
        &self,
        jql: &str,
        token: Option<&str>,
        start_at: u32,
        fields: &[String],
        reconcile: Option<i64>,
    ) -> Result<(Vec<Value>, SearchNext), ConnectorError> {
        match self.config.deployment {
            Deployment::Cloud => {
                let mut body = json!({"jql": jql, "maxResults": self.config.page_size, "fields": fields});
                if let Some(token) = token {
                    body["nextPageToken"] = json!(token);
                }
                if let Some(id) = reconcile {
                    body["reconcileIssues"] = json!([id]);
                }
                let page = self.post_json(&self.url("/rest/api/3/search/jql"), &body).await?;
                let issues = page.get("issues").and_then(Value::as_array).cloned().unwrap_or_default();
                let next = page
                    .get("nextPageToken")
                    .and_then(Value::as_str)
                    .filter(|_| page.get("isLast").and_then(Value::as_bool) != Some(true))
                    .map(|t| SearchNext::Token(t.to_owned()))
                    .unwrap_or(SearchNext::Done);
                Ok((issues, next))
            }
            Deployment::DataCenter => {
                let body = json!({"jql": jql, "startAt": start_at, "maxResults": self.config.page_size, "fields": fields});
                let page = self.post_json(&self.url("/rest/api/2/search"), &body).await?;
                let issues = page.get("issues").and_then(Value::as_array).cloned().unwrap_or_default();
                let total = page.get("total").and_then(Value::as_u64).unwrap_or(0);
                // Read the startAt the server used: it may cap maxResults below what was asked.
                let served_from = page.get("startAt").and_then(Value::as_u64).unwrap_or(u64::from(start_at));
                let end = served_from + issues.len() as u64;
                let next = if issues.is_empty() || end >= total {
                    SearchNext::Done
                } else {
                    SearchNext::StartAt(u32::try_from(end).unwrap_or(u32::MAX))
                };
                Ok((issues, next))
            }
        }
    }

    fn ticket(&self, mut issue: Value, fields: &Fields) -> Result<Ticket, ConnectorError> {
        let id = issue
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| self.permanent("an issue without id".into()))?
            .to_owned();
        let key = issue.get("key").and_then(Value::as_str).unwrap_or(&id).to_owned();
        let updated = updated_of(&issue).map_err(|e| self.permanent(format!("issue {key}: {e}")))?;
        let mut custom = Map::new();
        for (name, field_id) in &fields.custom {
            custom.insert(
                name.clone(),
                issue.pointer(&format!("/fields/{field_id}")).cloned().unwrap_or(Value::Null),
            );
        }
        let request_type = fields
            .request_type
            .as_ref()
            .and_then(|f| issue.pointer(&format!("/fields/{f}/requestType/name")))
            .cloned()
            .unwrap_or(Value::Null);
        if let Some(object) = issue.as_object_mut() {
            object.insert("custom".into(), Value::Object(custom));
            object.insert("request_type".into(), request_type);
            // Description: plain text whatever the API version, for mappings and evidence.
            if let Some(description) = object.get("fields").and_then(|f| f.get("description")).filter(|d| !d.is_null()) {
                let text = adf_plain_text(description);
                object.insert("description_text".into(), Value::String(text));
            }
        }
        let site = self.config.site_url.as_ref().unwrap_or(&self.config.base_url);
        let mut url = site.clone();
        let browse = format!("{}/browse/{}", url.path().trim_end_matches('/'), percent(&key));
        url.set_path(&browse);
        url.set_query(None);
        Ok(Ticket {
            source: self.id.clone(),
            key: id,
            number: key,
            url: url.to_string(),
            version: updated.timestamp_millis().to_string(),
            updated,
            raw: issue,
        })
    }

    /// Pages the issue's comments newest first, looking for one of ours carrying `marker`:
    /// by the marker property, or by the marker line when the property could not be set.
    async fn find_marker(&self, key: &str, marker: &str) -> Result<Option<FoundComment>, ConnectorError> {
        let me = self.me().await?.to_owned();
        let url = self.api(&format!("/issue/{}/comment", percent(key)));
        let mut start = 0usize;
        loop {
            let page = self
                .get_json(
                    &url,
                    &[
                        ("orderBy", "-created".into()),
                        ("startAt", start.to_string()),
                        ("maxResults", COMMENT_PAGE.to_string()),
                        ("expand", "properties".into()),
                    ],
                )
                .await?;
            let comments = page.get("comments").and_then(Value::as_array).cloned().unwrap_or_default();
            for c in &comments {
                let author = c
                    .pointer("/author/accountId")
                    .or_else(|| c.pointer("/author/key"))
                    .and_then(Value::as_str);
                if author != Some(me.as_str()) {
                    continue;
                }
                let by_property = c.get("properties").and_then(Value::as_array).is_some_and(|ps| {
                    ps.iter().any(|p| {
                        p.get("key").and_then(Value::as_str) == Some(MARKER_PROPERTY)
                            && p.pointer("/value/marker").and_then(Value::as_str) == Some(marker)
                    })
                });
                let text = adf_plain_text(c.get("body").unwrap_or(&Value::Null));
                if by_property || has_marker_line(&text, marker) {
                    let id = c.get("id").and_then(Value::as_str).unwrap_or_default();
                    return Ok(Some(FoundComment {
                        id: CommentId(id.to_owned()),
                        text,
                    }));
                }
            }
            let total = page.get("total").and_then(Value::as_u64).unwrap_or(0) as usize;
            start += comments.len();
            if comments.is_empty() || start >= total {
                return Ok(None);
            }
        }
    }
}

enum SearchNext {
    Done,
    Token(String),
    StartAt(u32),
}

fn overlap_ms(secs: u64) -> i64 {
    i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX / 4)
}

fn updated_of(issue: &Value) -> Result<DateTime<Utc>, String> {
    let raw = issue
        .pointer("/fields/updated")
        .and_then(Value::as_str)
        .ok_or("no fields.updated")?;
    DateTime::parse_from_str(raw, TIME_FORMAT)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("updated {raw:?}: {e}"))
}

/// Percent-encodes a path segment (issue keys and ids never need it, but a webhook could send
/// anything).
fn percent(segment: &str) -> String {
    url::form_urlencoded::byte_serialize(segment.as_bytes()).collect()
}

fn is_issue_id(key: &str) -> bool {
    !key.is_empty() && key.len() <= 20 && key.bytes().all(|b| b.is_ascii_digit())
}

#[async_trait]
impl Connector for Jira {
    fn id(&self) -> &str {
        &self.id
    }

    fn kind(&self) -> &'static str {
        crate::KIND
    }

    async fn poll(&self, cursor: &Cursor) -> Result<Page, ConnectorError> {
        let mut state = JiraCursor::decode(cursor).map_err(|m| self.permanent(m))?;
        let fields = self.fields().await?.clone();
        let field_list = self.field_list(&fields);
        let mut run = state.run.take().unwrap_or(Run {
            lower: state.from,
            token: None,
            start_at: 0,
            max_seen: None,
        });
        let bounds: Vec<String> = run.lower.map(|lower| format!("updated >= {lower}")).into_iter().collect();
        let jql = format!("{} ORDER BY updated ASC, key ASC", self.jql(&bounds));
        let (issues, next) = match self.search(&jql, run.token.as_deref(), run.start_at, &field_list, None).await {
            // Cloud page tokens expire (after 7 days), and a search left half-read across an
            // outage would fail every pass. Restart it just before the newest update read: the
            // `seen` set drops what was read already, and nothing after it is skipped.
            Err(ConnectorError::Permanent { message, .. }) if run.token.is_some() => {
                tracing::warn!(connector = %self.id, error = %message, "the search's page token was refused; restarting the search from its last position");
                run.token = None;
                run.lower = run.max_seen.map(|m| m - overlap_ms(self.config.overlap_secs)).or(run.lower);
                let bounds: Vec<String> = run.lower.map(|lower| format!("updated >= {lower}")).into_iter().collect();
                let jql = format!("{} ORDER BY updated ASC, key ASC", self.jql(&bounds));
                self.search(&jql, None, 0, &field_list, None).await?
            }
            other => other?,
        };
        let mut seen: HashSet<(String, i64)> = state.seen.drain(..).collect();
        let mut tickets = Vec::new();
        let mut page_max = None::<i64>;
        for issue in issues {
            let ticket = self.ticket(issue, &fields)?;
            let ms = ticket.updated.timestamp_millis();
            page_max = Some(page_max.map_or(ms, |m| m.max(ms)));
            if seen.insert((ticket.key.clone(), ms)) {
                tickets.push(ticket);
            }
        }
        if let Some(page_max) = page_max {
            run.max_seen = Some(run.max_seen.map_or(page_max, |m| m.max(page_max)));
        }
        let more = match next {
            SearchNext::Token(token) => {
                run.token = Some(token);
                true
            }
            SearchNext::StartAt(start) => {
                match page_max {
                    // Keyset: the next page starts at the newest update read; what was read
                    // at that millisecond is in `seen`.
                    Some(max) if run.lower.is_none_or(|l| max > l) => {
                        run.lower = Some(max);
                        run.start_at = 0;
                    }
                    // A page entirely inside one millisecond: step through it by startAt.
                    _ => run.start_at = start,
                }
                if run.start_at.saturating_add(self.config.page_size) > self.config.result_window {
                    return Err(self.permanent(format!(
                        "more than {} issues share the updated time {:?}; raise result_window or narrow jql",
                        self.config.result_window, run.lower
                    )));
                }
                true
            }
            SearchNext::Done => false,
        };
        if more {
            state.run = Some(run);
        } else {
            // The search drained: the next reaches back `overlap` before the newest update read.
            if let Some(max) = run.max_seen {
                let from = max - overlap_ms(self.config.overlap_secs);
                state.from = Some(state.from.map_or(from, |f| f.max(from)));
            }
        }
        // Pages ascend by `updated`, so only versions within `overlap` of the newest read can
        // come back: the cursor stays small however long the search.
        let floor = match &state.run {
            Some(r) => r.max_seen.map(|m| m - overlap_ms(self.config.overlap_secs)).or(state.from),
            None => state.from,
        };
        state.seen = seen.into_iter().filter(|(_, ms)| floor.is_none_or(|f| *ms >= f)).collect();
        state.seen.sort();
        Ok(Page {
            tickets,
            next: state.encode(),
            more,
        })
    }

    async fn post_comment(&self, key: &str, comment: &Comment) -> Result<CommentId, ConnectorError> {
        let marker_property = json!({"key": MARKER_PROPERTY, "value": {"marker": comment.marker}});
        let internal = self.config.comments.visibility == Visibility::Internal;
        match self.config.comments.api {
            CommentApi::Platform => {
                let mut properties = vec![marker_property];
                if internal {
                    // JSM's internal note flag; ignored on projects without JSM.
                    properties.push(json!({"key": "sd.public.comment", "value": {"internal": true}}));
                }
                let body = match self.config.deployment {
                    Deployment::Cloud => adf_document(&comment.body),
                    Deployment::DataCenter => json!(wiki_body(&comment.body, &comment.marker)),
                };
                let created = self
                    .create_json(
                        &self.api(&format!("/issue/{}/comment", percent(key))),
                        &json!({"body": body, "properties": properties}),
                    )
                    .await?;
                let id = created.get("id").and_then(Value::as_str).unwrap_or_default();
                Ok(CommentId(id.to_owned()))
            }
            CommentApi::ServiceDesk => {
                let created = self
                    .create_json(
                        &self.url(&format!("/rest/servicedeskapi/request/{}/comment", percent(key))),
                        &json!({"body": wiki_body(&comment.body, &comment.marker), "public": !internal}),
                    )
                    .await?;
                let id = created.get("id").and_then(Value::as_str).unwrap_or_default().to_owned();
                // The JSM API takes no properties on create; the marker line already makes the
                // post findable, the property makes it exact.
                let url = self.api(&format!("/comment/{}/properties/{MARKER_PROPERTY}", percent(&id)));
                let value = json!({"marker": comment.marker});
                if let Err(e) = self.http.send(|c| c.put(&url).json(&value)).await {
                    tracing::warn!(connector = %self.id, comment = %id, error = %e, "could not set the marker property; the marker line still identifies the comment");
                }
                Ok(CommentId(id))
            }
        }
    }

    async fn find_comment(&self, key: &str, marker: &str) -> Result<Option<FoundComment>, ConnectorError> {
        self.find_marker(key, marker).await
    }

    fn auth(&self) -> Option<&Auth> {
        Some(self.http.auth())
    }

    fn max_concurrency(&self) -> usize {
        self.http.max_concurrency()
    }

    /// A comment bumps the issue's `updated`; the comment itself is not among the fields read.
    fn volatile_fields(&self) -> &'static [&'static str] {
        &["/fields/updated"]
    }

    fn markup(&self) -> &dyn Markup {
        match (self.config.deployment, self.config.comments.api) {
            (Deployment::Cloud, CommentApi::Platform) => &AdfMarkup,
            _ => &WikiMarkup,
        }
    }

    fn cursor_since(&self, since: DateTime<Utc>) -> Result<Cursor, ConnectorError> {
        Ok(JiraCursor {
            from: Some(since.timestamp_millis()),
            ..JiraCursor::default()
        }
        .encode())
    }

    /// `/myself`, the permissions the connector needs on every project, and the custom field
    /// names; everything missing is listed at once.
    async fn check(&self) -> Result<(), ConnectorError> {
        self.me().await?;
        let mut needed = vec!["BROWSE_PROJECTS", "ADD_COMMENTS"];
        if self.config.comments.api == CommentApi::ServiceDesk && self.config.comments.visibility == Visibility::Internal {
            needed.push("SERVICEDESK_AGENT");
        }
        let mut missing = Vec::new();
        for project in &self.config.projects {
            let answer = self
                .get_json(
                    &self.api("/mypermissions"),
                    &[("projectKey", project.clone()), ("permissions", needed.join(","))],
                )
                .await?;
            for permission in &needed {
                let held = answer
                    .pointer(&format!("/permissions/{permission}/havePermission"))
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                if !held {
                    missing.push(format!("{permission} on project {project}"));
                }
            }
        }
        let fields = self.fields().await.err();
        if !missing.is_empty() {
            return Err(ConnectorError::Unauthorized {
                connector: self.id.clone(),
                message: format!(
                    "the integration user lacks: {}{}",
                    missing.join(", "),
                    fields.map(|e| format!("; also {e}")).unwrap_or_default()
                ),
            });
        }
        match fields {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    async fn fetch(&self, key: &str) -> Result<Option<Ticket>, ConnectorError> {
        if !is_issue_id(key) {
            return Ok(None);
        }
        let fields = self.fields().await?.clone();
        let field_list = self.field_list(&fields);
        // Through search, so the project bound and the configured JQL apply; on Cloud with
        // reconcileIssues for read-after-write.
        let jql = self.jql(&[format!("id = {key}")]);
        let id: i64 = key.parse().unwrap_or_default();
        let (issues, _) = self.search(&jql, None, 0, &field_list, Some(id)).await?;
        issues.into_iter().next().map(|i| self.ticket(i, &fields)).transpose()
    }

    fn webhook(&self) -> Option<&WebhookVerifier> {
        self.webhook.as_ref()
    }

    /// A Jira webhook: `{"webhookEvent": "jira:issue_updated", "issue": {"id": ...}}`. Only
    /// the id is used; the issue is read again.
    fn webhook_event(&self, headers: &reqwest::header::HeaderMap, body: &[u8]) -> Result<WebhookEvent, ConnectorError> {
        let payload: Value = serde_json::from_slice(body).map_err(|e| self.permanent(format!("webhook body: {e}")))?;
        let id = payload
            .pointer("/issue/id")
            .and_then(|v| v.as_str().map(String::from).or_else(|| v.as_u64().map(|n| n.to_string())))
            .filter(|id| is_issue_id(id))
            .ok_or_else(|| self.permanent("webhook body names no issue id".into()))?;
        Ok(WebhookEvent {
            delivery_id: self.webhook.as_ref().and_then(|w| w.delivery_id(headers)),
            keys: vec![id],
        })
    }
}

/// The comment as wiki text: the marker line's brackets escaped so it is not a link.
fn wiki_body(body: &str, marker: &str) -> String {
    body.replace(&format!("[{marker}]"), &format!("\\[{marker}\\]"))
}
