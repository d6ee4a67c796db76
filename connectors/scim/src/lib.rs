//! A SCIM 2.0 service provider simulator (feature `simulator`) for deskbridge's identity
//! directory client: what deskbridge reads from a directory (RFC 7643/7644), as real directories
//! answer it. The client itself lives in deskbridge (`src/directory/scim.rs`).

#[cfg(feature = "simulator")]
pub mod simulator;
