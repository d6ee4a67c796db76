//! deskbridge: connects service desks to identity decision points. Tickets are intake and
//! evidence; the decision belongs to the policy owner.

pub mod audit;
mod backoff;
pub mod catalog;
pub mod commands;
pub mod config;
pub mod decision;
pub mod directory;
pub mod mapping;
pub mod metrics;
pub mod pipeline;
pub mod provisioning;
pub mod registry;
pub mod render;
pub mod report;
pub mod schema;
pub mod server;
pub mod store;
pub mod text;
pub mod wiring;
