//! Governance reports over the store.

pub mod access;
pub mod drift;
