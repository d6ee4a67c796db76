//! Integration tests across crates: real HTTP against the ServiceNow simulator, a real SQLite
//! file, the real Rego engine. Set TEST_LOG=1 to see tracing output.

mod audit;
mod backfill;
mod cli;
mod crash;
mod directory;
mod drift;
mod exactly_once;
mod hardening;
mod helpers;
mod jira;
mod mapping_fixtures;
mod oauth_chain;
mod one_writer;
mod operators;
mod pdp;
mod pdp_servers;
mod pipeline;
mod policy;
mod provisioning;
mod scim_real;
mod serve_webhook;
mod soak;
