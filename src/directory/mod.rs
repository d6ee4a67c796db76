//! The identity directory: is a person active, who is their manager, what do they already
//! hold. A SCIM 2.0 service ([`scim`]) or, for shops without one, an exported file ([`file`]).
//! A directory that cannot answer fails the decision closed: the request stays pending.

pub mod file;
pub mod scim;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use serde::Deserialize;

/// One identity as a directory holds it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Identity {
    /// `userName`.
    pub user_name: String,
    /// E-mail addresses.
    pub emails: Vec<String>,
    /// `externalId`.
    pub external_id: Option<String>,
    /// `active`.
    pub active: bool,
    /// `userType`.
    pub user_type: Option<String>,
    /// Enterprise extension `department`.
    pub department: Option<String>,
    /// The manager's `userName`.
    pub manager: Option<String>,
    /// Enterprise extension `employeeNumber`.
    pub employee_number: Option<String>,
    /// Display names of the groups held.
    pub groups: Vec<String>,
}

impl Identity {
    /// Whether `key` is this identity's user name, an e-mail or its external id (user names
    /// and e-mails are not case-exact).
    pub fn answers_to(&self, key: &str) -> bool {
        self.user_name.eq_ignore_ascii_case(key)
            || self.emails.iter().any(|e| e.eq_ignore_ascii_case(key))
            || self.external_id.as_deref() == Some(key)
    }
}

/// A source of identity facts.
#[async_trait]
pub trait Directory: Send + Sync {
    /// What answers (`scim https://…`, `file /etc/…`), for evidence.
    fn describe(&self) -> String;

    /// Looks every key up (a user name, e-mail or external id). A key the directory does not
    /// know maps to `None`. An error means the directory could not answer: the caller must
    /// fail closed, never treat it as "not found".
    async fn lookup(&self, keys: &[String]) -> Result<HashMap<String, Option<Identity>>, String>;
}

/// `[directory]` in the config file.
#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum DirectoryConfig {
    /// A SCIM 2.0 service provider.
    Scim(scim::ScimDirectoryConfig),
    /// An exported JSON or CSV file (read at start-up).
    File {
        /// The file; `.csv` or `.json`.
        path: PathBuf,
    },
}

impl DirectoryConfig {
    /// Makes relative paths relative to the config file's folder.
    pub fn rebase(&mut self, base: &std::path::Path) {
        if let Self::File { path } = self {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        }
        if let Self::Scim(c) = self {
            if let Some(ca) = &mut c.http.ca_cert_file {
                if ca.is_relative() {
                    *ca = base.join(&*ca);
                }
            }
        }
    }

    /// Builds the directory.
    pub fn build(&self) -> anyhow::Result<Arc<dyn Directory>> {
        Ok(match self {
            Self::Scim(c) => Arc::new(scim::ScimDirectory::new(c.clone())?),
            Self::File { path } => Arc::new(file::FileDirectory::load(path)?),
        })
    }
}
