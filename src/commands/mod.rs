//! What each CLI subcommand does. `main.rs` only parses arguments and calls these.

pub mod audit;
mod check;
mod decide;
pub mod demo;
mod demo_evidence;
mod mapping_test;
mod run;
mod simulate;
pub(crate) mod table;

pub use check::config_check;
pub use decide::{decide, policy_test, shadow_report};
pub use mapping_test::{catalog_check, mapping_test};
pub use run::{backfill, serve, sync};
pub use simulate::simulate;

/// `deskbridge schema`: the request/decision contract as JSON Schema.
pub fn schema() -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(&crate::schema::contract_schema())? + "\n")
}
