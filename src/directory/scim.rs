//! A SCIM 2.0 service provider as the identity directory (RFC 7643/7644): users found by a
//! configurable attribute with a correctly escaped filter, the Enterprise User extension,
//! `active` and `userType`, current groups from `User.groups` or, when the service does not
//! return them, `GET /Groups?filter=members[value eq "<id>"]` (paged), attribute names read
//! case-insensitively, 429/`Retry-After` and retries through the shared HTTP plumbing, and a
//! TTL cache revalidated with `If-None-Match`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use deskbridge_connector::auth::Auth;
use deskbridge_connector::http::{HttpClient, HttpSettings};
use deskbridge_connector::ConnectorError;
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::Mutex;

use super::file::{identity_of, lower_keys, ENTERPRISE};
use super::{Directory, Identity};

/// `[directory]` with `kind = "scim"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScimDirectoryConfig {
    /// The SCIM base URL, e.g. `https://dir.example/scim/v2`.
    #[serde(deserialize_with = "deskbridge_connector::urls::http_url")]
    pub base_url: url::Url,
    /// Bearer token; use `${VAR}`.
    pub token: secrecy::SecretString,
    /// Attributes a ticket's person id is matched against (OR-ed): `userName`, `emails.value`,
    /// `externalId`.
    #[serde(default = "default_attributes")]
    pub lookup_attributes: Vec<String>,
    /// Seconds a looked-up identity is used before it is read (or revalidated) again.
    #[serde(default = "default_ttl")]
    pub cache_ttl_secs: u64,
    /// `count` per page when listing groups.
    #[serde(default = "default_page")]
    pub page_size: u32,
    /// Transport settings.
    #[serde(default)]
    pub http: HttpSettings,
}

fn default_attributes() -> Vec<String> {
    vec!["userName".into(), "emails.value".into()]
}
fn default_ttl() -> u64 {
    300
}
fn default_page() -> u32 {
    100
}

struct Cached {
    identity: Option<Identity>,
    id: Option<String>,
    etag: Option<String>,
    fetched: Instant,
}

/// The SCIM directory client.
pub struct ScimDirectory {
    config: ScimDirectoryConfig,
    http: HttpClient,
    cache: Mutex<HashMap<String, Cached>>,
    managers: Mutex<HashMap<String, Option<String>>>,
}

/// The SCIM error's `detail` (and `scimType`), for messages.
fn error_message(body: &[u8]) -> Option<String> {
    let v = lower_keys(serde_json::from_slice(body).ok()?);
    let detail = v["detail"].as_str()?;
    Some(match v["scimtype"].as_str() {
        Some(t) => format!("{t}: {detail}"),
        None => detail.to_owned(),
    })
}

/// A filter comparing `attribute` to `value`, the value written as a JSON string (quotes and
/// backslashes escaped); the query string is percent-encoded by the HTTP client.
pub fn eq_filter(attribute: &str, value: &str) -> String {
    format!("{attribute} eq {}", Value::String(value.to_owned()))
}

impl ScimDirectory {
    /// A client for the configured service.
    pub fn new(config: ScimDirectoryConfig) -> anyhow::Result<Self> {
        let auth = Auth::from_config(
            &deskbridge_connector::auth::AuthConfig::Bearer {
                token: config.token.clone(),
            },
            "directory",
        )?;
        let http = HttpClient::new("directory", config.http.clone(), auth, error_message)?;
        Ok(Self {
            config,
            http,
            cache: Mutex::new(HashMap::new()),
            managers: Mutex::new(HashMap::new()),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.config.base_url.as_str().trim_end_matches('/'))
    }

    async fn get(&self, path: &str, query: &[(&str, String)], etag: Option<&str>) -> Result<Option<(Value, Option<String>)>, String> {
        let url = self.url(path);
        let result = self
            .http
            .send(|c| {
                let mut r = c.get(&url).header("Accept", "application/scim+json").query(query);
                if let Some(tag) = etag {
                    r = r.header("If-None-Match", tag);
                }
                r
            })
            .await;
        match result {
            Ok(response) => {
                let tag = response.headers.get("etag").and_then(|v| v.to_str().ok()).map(String::from);
                let body: Value = response.json("directory").map_err(|e| e.to_string())?;
                Ok(Some((lower_keys(body), tag)))
            }
            // Not modified since `etag`.
            Err(ConnectorError::Permanent { message, .. }) if etag.is_some() && message.starts_with("304") => Ok(None),
            Err(ConnectorError::NotFound { .. }) if path.starts_with("/Users/") || path.starts_with("/Groups/") => {
                Ok(Some((Value::Null, None)))
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// The display names of the groups user `id` is a member of, all pages.
    async fn groups_of(&self, id: &str) -> Result<Vec<String>, String> {
        let mut names = Vec::new();
        let mut start = 1u64;
        loop {
            let (page, _) = self
                .get(
                    "/Groups",
                    &[
                        ("filter", format!("members[value eq {}]", Value::String(id.to_owned()))),
                        ("attributes", "displayName".into()),
                        ("startIndex", start.to_string()),
                        ("count", self.config.page_size.to_string()),
                    ],
                    None,
                )
                .await?
                .ok_or("unexpected 304")?;
            let items = page["resources"].as_array().cloned().unwrap_or_default();
            names.extend(items.iter().filter_map(|g| g["displayname"].as_str().map(String::from)));
            let total = page["totalresults"].as_u64().unwrap_or(0);
            start += items.len() as u64;
            if items.is_empty() || start > total {
                return Ok(names);
            }
        }
    }

    /// A manager's `userName` from their SCIM id (cached).
    async fn manager_name(&self, id: &str) -> Result<Option<String>, String> {
        if let Some(name) = self.managers.lock().await.get(id) {
            return Ok(name.clone());
        }
        let path = format!("/Users/{}", url::form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>());
        let (user, _) = self
            .get(&path, &[("attributes", "userName".into())], None)
            .await?
            .ok_or("unexpected 304")?;
        let name = user["username"].as_str().map(String::from);
        self.managers.lock().await.insert(id.to_owned(), name.clone());
        Ok(name)
    }

    /// Completes an identity read from a user resource: groups and the manager's name.
    async fn complete(&self, user: &Value) -> Result<Option<Identity>, String> {
        let Some(mut identity) = identity_of(user) else { return Ok(None) };
        let id = user["id"].as_str().unwrap_or_default().to_owned();
        if user.get("groups").is_none() && !id.is_empty() {
            identity.groups = self.groups_of(&id).await?;
        }
        if let Some(manager_id) = user[ENTERPRISE]["manager"]["value"].as_str() {
            identity.manager = self.manager_name(manager_id).await?;
        }
        Ok(Some(identity))
    }

    async fn find(&self, key: &str) -> Result<(Option<Identity>, Option<String>, Option<String>), String> {
        let filter = self
            .config
            .lookup_attributes
            .iter()
            .map(|a| eq_filter(a, key))
            .collect::<Vec<_>>()
            .join(" or ");
        let (list, _) = self
            .get("/Users", &[("filter", filter), ("count", "2".into())], None)
            .await?
            .ok_or("unexpected 304")?;
        let users = list["resources"].as_array().cloned().unwrap_or_default();
        match users.as_slice() {
            [] => Ok((None, None, None)),
            [user] => {
                let id = user["id"].as_str().map(String::from);
                let etag = user["meta"]["version"].as_str().map(String::from);
                Ok((self.complete(user).await?, id, etag))
            }
            _ => Err(format!(
                "{key:?} matches more than one directory user; make lookup_attributes unique"
            )),
        }
    }

    async fn lookup_one(&self, key: &str) -> Result<Option<Identity>, String> {
        let ttl = Duration::from_secs(self.config.cache_ttl_secs);
        let stale = {
            let cache = self.cache.lock().await;
            match cache.get(key) {
                Some(c) if c.fetched.elapsed() < ttl => return Ok(c.identity.clone()),
                Some(c) => c.id.clone().zip(c.etag.clone()),
                None => None,
            }
        };
        // Past its TTL: revalidate the user by ETag; unchanged (304) keeps the cached facts.
        if let Some((id, etag)) = stale {
            let path = format!("/Users/{}", url::form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>());
            match self.get(&path, &[], Some(&etag)).await? {
                None => {
                    let mut cache = self.cache.lock().await;
                    if let Some(c) = cache.get_mut(key) {
                        c.fetched = Instant::now();
                        return Ok(c.identity.clone());
                    }
                }
                Some((user, tag)) if !user.is_null() => {
                    let identity = self.complete(&user).await?;
                    let etag = user["meta"]["version"].as_str().map(String::from).or(tag);
                    self.cache.lock().await.insert(
                        key.to_owned(),
                        Cached {
                            identity: identity.clone(),
                            id: Some(id),
                            etag,
                            fetched: Instant::now(),
                        },
                    );
                    return Ok(identity);
                }
                Some(_) => {}
            }
        }
        let (identity, id, etag) = self.find(key).await?;
        self.cache.lock().await.insert(
            key.to_owned(),
            Cached {
                identity: identity.clone(),
                id,
                etag,
                fetched: Instant::now(),
            },
        );
        Ok(identity)
    }
}

#[async_trait]
impl Directory for ScimDirectory {
    fn describe(&self) -> String {
        format!("scim {}", self.config.base_url)
    }

    async fn lookup(&self, keys: &[String]) -> Result<HashMap<String, Option<Identity>>, String> {
        let mut keys: Vec<String> = keys.to_vec();
        keys.sort();
        keys.dedup();
        // Keys not cached yet are found in batches: one filtered query per BATCH keys.
        let fresh: Vec<String> = {
            let cache = self.cache.lock().await;
            keys.iter().filter(|k| !cache.contains_key(*k)).cloned().collect()
        };
        for chunk in fresh.chunks(BATCH) {
            self.find_many(chunk).await?;
        }
        let mut out = HashMap::new();
        for key in keys {
            let identity = self.lookup_one(&key).await?;
            out.insert(key, identity);
        }
        Ok(out)
    }
}

/// A directory group as reconciliation reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMembers {
    /// Its id.
    pub id: String,
    /// Its display name.
    pub name: String,
    /// Its members' ids.
    pub members: Vec<String>,
}

/// A user as provisioning evidence needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRef {
    /// `userName`.
    pub user_name: String,
    /// `active`.
    pub active: bool,
}

fn path_of(kind: &str, id: &str) -> String {
    format!(
        "/{kind}/{}",
        url::form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>()
    )
}

impl ScimDirectory {
    /// The user with SCIM id `id` (`None` when the directory has no such user).
    pub async fn user_by_id(&self, id: &str) -> Result<Option<UserRef>, String> {
        let (user, _) = self
            .get(&path_of("Users", id), &[("attributes", "userName,active".into())], None)
            .await?
            .ok_or("unexpected 304")?;
        Ok(user_ref(&user))
    }

    /// The users with these SCIM ids, read `BATCH` at a time with an `or`-ed `id eq` filter (ids
    /// the directory does not have are left out).
    pub async fn users_by_ids(&self, ids: &[String]) -> Result<HashMap<String, UserRef>, String> {
        let mut found = HashMap::new();
        for chunk in ids.chunks(BATCH) {
            let filter = chunk.iter().map(|id| eq_filter("id", id)).collect::<Vec<_>>().join(" or ");
            let (list, _) = self
                .get(
                    "/Users",
                    &[
                        ("filter", filter),
                        ("attributes", "userName,active".into()),
                        ("count", chunk.len().to_string()),
                    ],
                    None,
                )
                .await?
                .ok_or("unexpected 304")?;
            for user in list["resources"].as_array().into_iter().flatten() {
                if let (Some(id), Some(found_user)) = (user["id"].as_str(), user_ref(user)) {
                    found.insert(id.to_owned(), found_user);
                }
            }
        }
        Ok(found)
    }

    /// The display name of the group with SCIM id `id`, its members left out (a big group's
    /// member list is never read just to name it).
    pub async fn group_name_by_id(&self, id: &str) -> Result<Option<String>, String> {
        let (group, _) = self
            .get(&path_of("Groups", id), &[("excludedAttributes", "members".into())], None)
            .await?
            .ok_or("unexpected 304")?;
        Ok(group["displayname"].as_str().map(String::from))
    }

    /// The group with SCIM id `id`, members included (`None` when there is no such group).
    pub async fn group_by_id(&self, id: &str) -> Result<Option<GroupMembers>, String> {
        let (group, _) = self.get(&path_of("Groups", id), &[], None).await?.ok_or("unexpected 304")?;
        Ok(group_members(&group))
    }

    /// The group whose display name is `name`, members included.
    pub async fn group_by_name(&self, name: &str) -> Result<Option<GroupMembers>, String> {
        let (list, _) = self
            .get(
                "/Groups",
                &[("filter", eq_filter("displayName", name)), ("count", "2".into())],
                None,
            )
            .await?
            .ok_or("unexpected 304")?;
        let groups = list["resources"].as_array().cloned().unwrap_or_default();
        match groups.as_slice() {
            [] => Ok(None),
            [group] => Ok(group_members(group)),
            _ => Err(format!("more than one directory group is named {name:?}")),
        }
    }
}

/// `userName` and `active` of a user resource (keys lower-cased); a user with no `active` is
/// taken as active.
fn user_ref(user: &Value) -> Option<UserRef> {
    Some(UserRef {
        user_name: user["username"].as_str()?.to_owned(),
        active: super::file::truthy(&user["active"]).unwrap_or(true),
    })
}

fn group_members(group: &Value) -> Option<GroupMembers> {
    Some(GroupMembers {
        id: group["id"].as_str()?.to_owned(),
        name: group["displayname"].as_str()?.to_owned(),
        members: group["members"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["value"].as_str().map(String::from))
            .collect(),
    })
}

/// Keys looked up in one filtered query.
const BATCH: usize = 20;

impl ScimDirectory {
    /// Finds several keys with one `or`-ed filter and caches each answer (a key no user answers
    /// to is cached as unknown).
    async fn find_many(&self, keys: &[String]) -> Result<(), String> {
        let filter = keys
            .iter()
            .flat_map(|k| self.config.lookup_attributes.iter().map(move |a| eq_filter(a, k)))
            .collect::<Vec<_>>()
            .join(" or ");
        let count = (keys.len() * 2).to_string();
        let (list, _) = self
            .get("/Users", &[("filter", filter), ("count", count)], None)
            .await?
            .ok_or("unexpected 304")?;
        let users = list["resources"].as_array().cloned().unwrap_or_default();
        for key in keys {
            let matching: Vec<&Value> = users.iter().filter(|u| identity_of(u).is_some_and(|i| i.answers_to(key))).collect();
            let entry = match matching.as_slice() {
                [] => Cached {
                    identity: None,
                    id: None,
                    etag: None,
                    fetched: Instant::now(),
                },
                [user] => Cached {
                    identity: self.complete(user).await?,
                    id: user["id"].as_str().map(String::from),
                    etag: user["meta"]["version"].as_str().map(String::from),
                    fetched: Instant::now(),
                },
                _ => {
                    return Err(format!(
                        "{key:?} matches more than one directory user; make lookup_attributes unique"
                    ))
                }
            };
            self.cache.lock().await.insert(key.clone(), entry);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::eq_filter;

    #[test]
    fn filter_values_are_escaped_as_json_strings() {
        assert_eq!(eq_filter("userName", "o\"neil\\x"), r#"userName eq "o\"neil\\x""#);
        assert_eq!(
            eq_filter("userName", "a\" or userName pr \""),
            r#"userName eq "a\" or userName pr \"""#
        );
    }
}
