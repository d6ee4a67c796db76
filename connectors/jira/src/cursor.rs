use deskbridge_connector::Cursor;
use serde::{Deserialize, Serialize};

/// Where a Jira poll resumes (stored as JSON in [`Cursor`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JiraCursor {
    /// Lower bound (`updated >=`, epoch ms) of the next search; `None` reads from the start.
    pub from: Option<i64>,
    /// `(issue id, updated ms)` already read at or after `from`: the overlap's duplicates.
    #[serde(default)]
    pub seen: Vec<(String, i64)>,
    /// The search being paged, if one is under way.
    #[serde(default)]
    pub run: Option<Run>,
}

/// One search, paged.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    /// `updated >=` of this search. Data Center moves it to the newest `updated` read after
    /// every page (keyset paging), so pages cannot shift under changes and `startAt` stays far
    /// below the result window.
    pub lower: Option<i64>,
    /// Cloud: the next page's token.
    #[serde(default)]
    pub token: Option<String>,
    /// Data Center: `startAt` within `lower`, used only while a page holds nothing newer than
    /// `lower` (many issues updated in the same millisecond).
    #[serde(default)]
    pub start_at: u32,
    /// The largest `updated` read by this search.
    pub max_seen: Option<i64>,
}

impl JiraCursor {
    pub fn decode(cursor: &Cursor) -> Result<Self, String> {
        match &cursor.0 {
            None => Ok(Self::default()),
            Some(text) => serde_json::from_str(text).map_err(|e| format!("stored cursor is not a Jira cursor: {e}")),
        }
    }

    pub fn encode(&self) -> Cursor {
        Cursor(Some(serde_json::to_string(self).unwrap_or_default()))
    }
}
