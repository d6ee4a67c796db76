//! The keyset cursor `(sys_updated_on, sys_id)` of the last fully stored record.

use deskbridge_connector::Cursor;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Keyset {
    /// `sys_updated_on` of the last stored record, `yyyy-MM-dd HH:mm:ss` UTC.
    pub t: String,
    /// Its `sys_id`.
    pub id: String,
}

impl Keyset {
    pub fn decode(cursor: &Cursor) -> Result<Option<Self>, String> {
        match &cursor.0 {
            None => Ok(None),
            Some(s) => serde_json::from_str(s)
                .map(Some)
                .map_err(|e| format!("unreadable cursor {s:?}: {e}")),
        }
    }

    pub fn encode(&self) -> Cursor {
        Cursor(Some(serde_json::json!({"t": self.t, "id": self.id}).to_string()))
    }
}
