//! The deskbridge connector contract.
//!
//! A connector moves tickets and comments between one ITSM and deskbridge, nothing else: it never
//! sees the access-request schema, the store or the HTTP server. This crate holds the contract
//! ([`Connector`]), the values it moves ([`Ticket`], [`Cursor`], [`Page`], [`Comment`]), the error
//! type every connector returns ([`ConnectorError`]) and the HTTP plumbing connectors share:
//! authentication ([`auth`]), retries with jittered backoff and `Retry-After` ([`http`]).

pub mod auth;
mod connector;
mod error;
pub mod http;
#[cfg(feature = "simkit")]
pub mod simkit;
#[cfg(feature = "testkit")]
pub mod testkit;
mod ticket;
pub mod urls;
pub mod webhook;

pub use connector::{Connector, Markup};
pub use error::ConnectorError;
pub use ticket::{has_marker_line, marker_line, neutralize_markers, Comment, CommentId, Cursor, FoundComment, Page, Ticket, MARKER_PREFIX};
