use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{NaiveDateTime, TimeZone, Utc};
use deskbridge_connector::auth::Auth;
use deskbridge_connector::http::HttpClient;
use deskbridge_connector::webhook::{WebhookEvent, WebhookVerifier};
use deskbridge_connector::{has_marker_line, Comment, CommentId, Connector, ConnectorError, Cursor, FoundComment, Markup, Page, Ticket};
use futures_util::StreamExt as _;
use serde_json::{Map, Value};

use crate::config::ServiceNowConfig;
use crate::cursor::Keyset;
use crate::markup::JournalMarkup;
use crate::query::Query;

/// `sys_updated_on` format: second resolution, UTC.
const TIME_FORMAT: &str = "%Y-%m-%d %H:%M:%S";
/// sys_ids per `IN` clause when reading variables and approvals for a page.
const IN_CHUNK: usize = 100;
/// Rows per page when reading variables and approvals.
const SIDE_PAGE: usize = 1000;
/// Journal entries mentioning a marker read at once (ours carries it once; quoting is
/// neutralised, so more than one is already unusual).
const JOURNAL_MATCHES: usize = 20;

/// A ServiceNow instance behind the [`Connector`] contract.
pub struct ServiceNow {
    id: String,
    config: ServiceNowConfig,
    fields: String,
    http: HttpClient,
    webhook: Option<WebhookVerifier>,
}

/// The signature header a business rule is expected to set, unless configured otherwise.
pub const DEFAULT_SIGNATURE_HEADER: &str = "X-Deskbridge-Signature";

/// Whether `key` looks like a sys_id (32 hex characters); anything else never reaches a query.
fn is_sys_id(key: &str) -> bool {
    key.len() == 32 && key.bytes().all(|b| b.is_ascii_hexdigit())
}

type Record = Map<String, Value>;

impl ServiceNow {
    /// Builds the connector `id` from its configuration; every invalid key is reported at once.
    pub fn new(id: &str, config: ServiceNowConfig) -> Result<Self, ConnectorError> {
        ConnectorError::config_problems(id, config.validate())?;
        let auth = Auth::from_config(&config.auth, id)?;
        let http = HttpClient::new(id, config.http.clone(), auth, crate::error_message)?;
        let mut fields = config.fields.clone();
        for required in ["sys_id", "number", "sys_updated_on", "sys_mod_count"] {
            if !fields.iter().any(|f| f == required) {
                fields.push(required.into());
            }
        }
        let webhook = config
            .webhook
            .as_ref()
            .map(|w| WebhookVerifier::new(w, DEFAULT_SIGNATURE_HEADER, None));
        Ok(Self {
            id: id.to_owned(),
            fields: fields.join(","),
            config,
            http,
            webhook,
        })
    }

    fn table_url(&self, table: &str) -> String {
        format!("{}/api/now/table/{table}", self.config.base_url.as_str().trim_end_matches('/'))
    }

    fn permanent(&self, message: String) -> ConnectorError {
        ConnectorError::Permanent {
            connector: self.id.clone(),
            message,
        }
    }

    /// One Table API list call; returns the `result` rows.
    async fn list(&self, table: &str, query: &str, fields: &str, limit: usize, offset: usize) -> Result<Vec<Record>, ConnectorError> {
        let url = self.table_url(table);
        let (limit, offset) = (limit.to_string(), offset.to_string());
        let response = self
            .http
            .send(|c| {
                c.get(&url).header("Accept", "application/json").query(&[
                    ("sysparm_query", query),
                    ("sysparm_fields", fields),
                    ("sysparm_limit", limit.as_str()),
                    ("sysparm_offset", offset.as_str()),
                    ("sysparm_display_value", "false"),
                    ("sysparm_exclude_reference_link", "true"),
                    ("sysparm_no_count", "true"),
                ])
            })
            .await?;
        #[derive(serde::Deserialize)]
        struct Envelope {
            result: Vec<Record>,
        }
        Ok(response.json::<Envelope>(&self.id)?.result)
    }

    /// Reads every row of `table` whose `column` is one of `ids`, in chunks, fully paged.
    async fn side_rows(&self, table: &str, column: &str, ids: &[&str], fields: &str) -> Result<Vec<Record>, ConnectorError> {
        let mut rows = Vec::new();
        for chunk in ids.chunks(IN_CHUNK) {
            let query = Query::new(None)
                .one_of(column, chunk)
                .map_err(|e| self.permanent(e.to_string()))?
                .order_by("sys_id")
                .build();
            rows.extend(self.all_rows(table, &query, fields).await?);
        }
        Ok(rows)
    }

    /// Every row `query` selects (it orders by a unique field, so pages neither skip nor
    /// repeat), read `SIDE_PAGE` at a time.
    async fn all_rows(&self, table: &str, query: &str, fields: &str) -> Result<Vec<Record>, ConnectorError> {
        let mut rows = Vec::new();
        loop {
            let page = self.list(table, query, fields, SIDE_PAGE, rows.len()).await?;
            let n = page.len();
            rows.extend(page);
            if n < SIDE_PAGE {
                return Ok(rows);
            }
        }
    }

    /// Catalog variables of each record, `{ritm sys_id: {variable name: value}}`.
    async fn variables(&self, ids: &[&str]) -> Result<BTreeMap<String, Map<String, Value>>, ConnectorError> {
        let rows = self
            .side_rows(
                "sc_item_option_mtom",
                "request_item",
                ids,
                "request_item,sc_item_option.item_option_new.name,sc_item_option.value",
            )
            .await?;
        let mut out: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
        for row in rows {
            let (Some(item), Some(name)) = (
                str_field(&row, "request_item"),
                str_field(&row, "sc_item_option.item_option_new.name"),
            ) else {
                continue;
            };
            let value = row.get("sc_item_option.value").cloned().unwrap_or(Value::String(String::new()));
            out.entry(item.to_owned()).or_default().insert(name.to_owned(), value);
        }
        Ok(out)
    }

    /// Approvals recorded in ServiceNow for each record (informational only).
    async fn approvals(&self, ids: &[&str]) -> Result<BTreeMap<String, Vec<Value>>, ConnectorError> {
        let rows = self
            .side_rows(
                "sysapproval_approver",
                "sysapproval",
                ids,
                "sysapproval,approver.user_name,state,sys_updated_on",
            )
            .await?;
        let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for row in rows {
            let Some(item) = str_field(&row, "sysapproval") else { continue };
            out.entry(item.to_owned()).or_default().push(serde_json::json!({
                "approver": row.get("approver.user_name").cloned().unwrap_or_default(),
                "state": row.get("state").cloned().unwrap_or_default(),
                "updated": row.get("sys_updated_on").cloned().unwrap_or_default(),
            }));
        }
        Ok(out)
    }

    fn ticket(
        &self,
        mut record: Record,
        variables: Option<Map<String, Value>>,
        approvals: Option<Vec<Value>>,
    ) -> Result<Ticket, ConnectorError> {
        let sys_id = str_field(&record, "sys_id")
            .ok_or_else(|| self.permanent("a record without sys_id".into()))?
            .to_owned();
        let updated_raw = str_field(&record, "sys_updated_on").unwrap_or_default();
        let updated = NaiveDateTime::parse_from_str(updated_raw, TIME_FORMAT)
            .map(|t| Utc.from_utc_datetime(&t))
            .map_err(|e| self.permanent(format!("record {sys_id}: sys_updated_on {updated_raw:?}: {e}")))?;
        let number = str_field(&record, "number").unwrap_or(&sys_id).to_owned();
        let version = str_field(&record, "sys_mod_count").unwrap_or("0").to_owned();
        if self.config.read_variables {
            record.insert("variables".into(), Value::Object(variables.unwrap_or_default()));
        }
        if self.config.read_approvals {
            record.insert("approvals".into(), Value::Array(approvals.unwrap_or_default()));
        }
        let mut url = self.config.base_url.clone();
        url.set_path("nav_to.do");
        url.query_pairs_mut()
            .clear()
            .append_pair("uri", &format!("{}.do?sys_id={sys_id}", self.config.table));
        Ok(Ticket {
            source: self.id.clone(),
            key: sys_id,
            number,
            url: url.to_string(),
            updated,
            version,
            raw: Value::Object(record),
        })
    }

    /// A query on the polled table: the admin's filter first.
    fn filtered(&self) -> Query {
        Query::new(self.config.filter.as_deref())
    }

    fn journal_query(&self, key: &str, marker: &str) -> Result<String, ConnectorError> {
        self.own_entries(Query::new(None).eq("element_id", key), marker).map(|q| q.build())
    }

    /// The integration user's entries in the comment field that contain `text`, on the tickets
    /// `tickets` selects. Only our own entries count: a requester who pastes a marker into a
    /// comment must not be able to suppress the decision.
    fn own_entries(&self, tickets: Result<Query, crate::query::BadValue>, text: &str) -> Result<Query, ConnectorError> {
        let query = tickets
            .and_then(|q| q.eq("element", self.config.comment_field.as_str()))
            .and_then(|q| q.like("value", text));
        let query = match self.http.auth().username() {
            Some(user) => query.and_then(|q| q.eq("sys_created_by", user)),
            None => query,
        };
        query.map_err(|e| self.permanent(e.to_string()))
    }
}

fn str_field<'a>(record: &'a Record, name: &str) -> Option<&'a str> {
    record.get(name).and_then(Value::as_str).filter(|s| !s.is_empty())
}

#[async_trait]
impl Connector for ServiceNow {
    fn id(&self) -> &str {
        &self.id
    }

    fn kind(&self) -> &'static str {
        crate::KIND
    }

    async fn poll(&self, cursor: &Cursor) -> Result<Page, ConnectorError> {
        let keyset = Keyset::decode(cursor).map_err(|m| self.permanent(m))?;
        let lag = chrono::Duration::seconds(i64::try_from(self.config.lag_secs).unwrap_or(i64::MAX / 2));
        let upper = (Utc::now() - lag).format(TIME_FORMAT).to_string();
        let limit = self.config.page_size as usize;
        let table = self.config.table.as_str();
        let mut rows = Vec::new();
        if let Some(k) = &keyset {
            // Drain the rest of the second the cursor stopped in, in sys_id order.
            let q = self
                .filtered()
                .eq("sys_updated_on", &k.t)
                .and_then(|q| q.gt("sys_id", &k.id))
                .map_err(|e| self.permanent(format!("cursor: {e}")))?
                .order_by("sys_id")
                .build();
            rows = self.list(table, &q, &self.fields, limit, 0).await?;
        }
        if rows.len() < limit {
            let mut q = self.filtered();
            if let Some(k) = &keyset {
                q = q.gt("sys_updated_on", &k.t).map_err(|e| self.permanent(format!("cursor: {e}")))?;
            }
            let q = q
                .le("sys_updated_on", &upper)
                .map_err(|e| self.permanent(e.to_string()))?
                .order_by("sys_updated_on")
                .order_by("sys_id")
                .build();
            rows.extend(self.list(table, &q, &self.fields, limit - rows.len(), 0).await?);
        }
        let more = rows.len() == limit;
        let next = match rows.last() {
            Some(last) => Keyset {
                t: str_field(last, "sys_updated_on").unwrap_or_default().to_owned(),
                id: str_field(last, "sys_id").unwrap_or_default().to_owned(),
            }
            .encode(),
            None => cursor.clone(),
        };
        let tickets = self.tickets(rows).await?;
        Ok(Page { tickets, next, more })
    }

    async fn post_comment(&self, key: &str, comment: &Comment) -> Result<CommentId, ConnectorError> {
        self.patch_journal(key, comment).await?;
        let found = self.find_journal(key, &comment.marker).await;
        Ok(self.posted_id(key, found.ok().flatten().map(|f| f.id)))
    }

    /// The journal write only: the Table API's answer is the ticket, not the new journal
    /// entry, so its id is read back later with the batch's others.
    async fn post_comment_in_batch(&self, key: &str, comment: &Comment) -> Result<Option<CommentId>, ConnectorError> {
        self.patch_journal(key, comment).await.map(|()| None)
    }

    async fn posted_comment_ids(&self, posted: &[(&str, &str)]) -> Vec<CommentId> {
        self.journal_ids(posted).await
    }

    async fn find_comment(&self, key: &str, marker: &str) -> Result<Option<FoundComment>, ConnectorError> {
        self.find_journal(key, marker).await
    }

    fn auth(&self) -> Option<&Auth> {
        Some(self.http.auth())
    }

    fn markup(&self) -> &dyn Markup {
        &JournalMarkup
    }

    fn max_concurrency(&self) -> usize {
        self.http.max_concurrency()
    }

    /// A journal entry (deskbridge's work note) bumps the record's modification count, update
    /// time and updater, and nothing else the poll reads.
    fn volatile_fields(&self) -> &'static [&'static str] {
        &["/sys_mod_count", "/sys_updated_on", "/sys_updated_by"]
    }

    /// Stands just before `since`: the keyset of a record one second earlier with the highest
    /// possible sys_id, so the next poll reads `sys_updated_on >= since` (second precision, as
    /// ServiceNow stores it).
    fn cursor_since(&self, since: chrono::DateTime<Utc>) -> Result<Cursor, ConnectorError> {
        let before = since - chrono::Duration::seconds(1);
        Ok(Keyset {
            t: before.format(TIME_FORMAT).to_string(),
            id: "f".repeat(32),
        }
        .encode())
    }

    async fn fetch(&self, key: &str) -> Result<Option<Ticket>, ConnectorError> {
        if !is_sys_id(key) {
            return Ok(None);
        }
        let query = self
            .filtered()
            .eq("sys_id", key)
            .map_err(|e| self.permanent(e.to_string()))?
            .build();
        let rows = self.list(&self.config.table, &query, &self.fields, 1, 0).await?;
        Ok(self.tickets(rows).await?.pop())
    }

    /// The credentials work, every table the connector reads is readable, and the integration
    /// user holds a role that writes the comment field; everything missing is listed at once.
    async fn check(&self) -> Result<(), ConnectorError> {
        let mut tables = vec![self.config.table.as_str(), "sys_journal_field"];
        if self.config.read_variables {
            tables.push("sc_item_option_mtom");
        }
        if self.config.read_approvals {
            tables.push("sysapproval_approver");
        }
        let mut missing = Vec::new();
        for table in tables {
            match self.list(table, "", "sys_id", 1, 0).await {
                Ok(_) => {}
                Err(ConnectorError::Unauthorized { message, .. }) if message.contains("(403)") => missing.push(format!("read on {table}")),
                Err(e) => return Err(e),
            }
        }
        let field = format!("{}.{}", self.config.table, self.config.comment_field.as_str());
        match self.http.auth().username() {
            Some(user) => {
                let query = format!(
                    "user.user_name={user}^state=active^role.nameIN{}",
                    self.config.write_roles.join(",")
                );
                match self.list("sys_user_has_role", &query, "sys_id", 1, 0).await {
                    Ok(rows) if rows.is_empty() => missing.push(format!(
                        "write on {field} (user {user} holds none of the roles {})",
                        self.config.write_roles.join(", ")
                    )),
                    Ok(_) => {}
                    Err(ConnectorError::Unauthorized { message, .. }) if message.contains("(403)") => {
                        tracing::warn!(connector = %self.id, "sys_user_has_role is not readable: write access on {field} is not verified at start-up");
                    }
                    Err(e) => return Err(e),
                }
            }
            None => {
                tracing::warn!(connector = %self.id, "no user name in the credentials: write access on {field} is not verified at start-up")
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        Err(ConnectorError::Unauthorized {
            connector: self.id.clone(),
            message: format!("the integration user lacks: {}", missing.join(", ")),
        })
    }

    fn webhook(&self) -> Option<&WebhookVerifier> {
        self.webhook.as_ref()
    }

    /// A business rule's delivery: `{"sys_id": "..."}` or `{"sys_ids": [...]}`.
    fn webhook_event(&self, headers: &reqwest::header::HeaderMap, body: &[u8]) -> Result<WebhookEvent, ConnectorError> {
        #[derive(serde::Deserialize)]
        struct Delivery {
            #[serde(default)]
            sys_id: Option<String>,
            #[serde(default)]
            sys_ids: Vec<String>,
        }
        let delivery: Delivery = serde_json::from_slice(body).map_err(|e| self.permanent(format!("webhook body: {e}")))?;
        let keys: Vec<String> = delivery
            .sys_id
            .into_iter()
            .chain(delivery.sys_ids)
            .filter(|k| is_sys_id(k))
            .collect();
        if keys.is_empty() {
            return Err(self.permanent("webhook body names no sys_id (32 hex characters)".into()));
        }
        Ok(WebhookEvent {
            delivery_id: self.webhook.as_ref().and_then(|w| w.delivery_id(headers)),
            keys,
        })
    }
}

impl ServiceNow {
    /// Tickets from rows, with their variables and approvals read in batches.
    async fn tickets(&self, rows: Vec<Record>) -> Result<Vec<Ticket>, ConnectorError> {
        let ids: Vec<&str> = rows.iter().filter_map(|r| str_field(r, "sys_id")).collect();
        let mut variables = if self.config.read_variables && !ids.is_empty() {
            self.variables(&ids).await?
        } else {
            BTreeMap::new()
        };
        let mut approvals = if self.config.read_approvals && !ids.is_empty() {
            self.approvals(&ids).await?
        } else {
            BTreeMap::new()
        };
        rows.into_iter()
            .map(|record| {
                let id = str_field(&record, "sys_id").unwrap_or_default().to_owned();
                self.ticket(record, variables.remove(&id), approvals.remove(&id))
            })
            .collect()
    }

    /// Appends `comment` to the ticket's journal field. Sent once: a journal append that
    /// landed and lost its answer must not land twice.
    async fn patch_journal(&self, key: &str, comment: &Comment) -> Result<(), ConnectorError> {
        let field = self.config.comment_field.as_str();
        let url = format!("{}/{key}", self.table_url(&self.config.table));
        let body = serde_json::json!({ field: comment.body });
        self.http
            .send_write(|c| {
                c.patch(&url)
                    .header("Accept", "application/json")
                    .query(&[("sysparm_fields", "sys_id")])
                    .json(&body)
            })
            .await?;
        Ok(())
    }

    /// A posted comment's id: its journal entry's `sys_id` when it was read back, else (the
    /// integration user cannot read `sys_journal_field`) a stable reference to the field.
    fn posted_id(&self, key: &str, read_back: Option<CommentId>) -> CommentId {
        read_back.unwrap_or_else(|| {
            tracing::warn!(connector = %self.id, ticket = %key, "posted comment not found in sys_journal_field; check the integration user can read it");
            CommentId(format!("{}/{key}#{}", self.config.table, self.config.comment_field.as_str()))
        })
    }

    /// The journal entries of comments just posted, `(ticket key, marker)`: every entry the
    /// integration user wrote on those tickets that mentions a marker, read in chunks of
    /// tickets and fully paged, then each comment's by its marker line. A failed read leaves
    /// the comments of its chunk with the stable reference, as [`Connector::post_comment`]
    /// does when it cannot read its comment back.
    async fn journal_ids(&self, posted: &[(&str, &str)]) -> Vec<CommentId> {
        let mut keys: Vec<&str> = posted.iter().map(|(key, _)| *key).filter(|key| is_sys_id(key)).collect();
        keys.sort_unstable();
        keys.dedup();
        let mut entries: std::collections::HashMap<String, Vec<(String, String)>> = std::collections::HashMap::new();
        // The chunks are read concurrently, up to the connector's bound on requests at once.
        let reads: Vec<_> = keys
            .chunks(IN_CHUNK)
            .map(|chunk| async move { (chunk.len(), self.own_marked_entries(chunk).await) })
            .collect();
        let mut reads = futures_util::stream::iter(reads).buffer_unordered(self.http.max_concurrency().max(1));
        while let Some((tickets, read)) = reads.next().await {
            match read {
                Ok(rows) => {
                    for row in rows {
                        if let (Some(ticket), Some(id), Some(text)) =
                            (str_field(&row, "element_id"), str_field(&row, "sys_id"), str_field(&row, "value"))
                        {
                            entries.entry(ticket.to_owned()).or_default().push((id.to_owned(), text.to_owned()));
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(connector = %self.id, error = %e, tickets, "reading back posted comments failed; they keep a reference to the field");
                }
            }
        }
        posted
            .iter()
            .map(|(key, marker)| {
                let found = entries
                    .get(*key)
                    .and_then(|on| on.iter().find(|(_, text)| has_marker_line(text, marker)))
                    .map(|(id, _)| CommentId(id.clone()));
                self.posted_id(key, found)
            })
            .collect()
    }

    /// The integration user's entries in the comment field of `tickets` that mention a marker.
    async fn own_marked_entries(&self, tickets: &[&str]) -> Result<Vec<Record>, ConnectorError> {
        let query = self
            .own_entries(Query::new(None).one_of("element_id", tickets), deskbridge_connector::MARKER_PREFIX)?
            .order_by("sys_id")
            .build();
        self.all_rows("sys_journal_field", &query, "sys_id,element_id,value").await
    }

    /// The integration user's journal entries on the ticket that mention the marker, then only
    /// those carrying it as a line of its own.
    async fn find_journal(&self, key: &str, marker: &str) -> Result<Option<FoundComment>, ConnectorError> {
        if !is_sys_id(key) {
            return Ok(None);
        }
        let rows = self
            .list(
                "sys_journal_field",
                &self.journal_query(key, marker)?,
                "sys_id,value",
                JOURNAL_MATCHES,
                0,
            )
            .await?;
        Ok(rows.iter().find_map(|r| {
            let text = str_field(r, "value")?;
            let id = str_field(r, "sys_id")?;
            has_marker_line(text, marker).then(|| FoundComment {
                id: CommentId(id.to_owned()),
                text: text.to_owned(),
            })
        }))
    }
}
