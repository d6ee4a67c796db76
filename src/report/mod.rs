//! Governance reports over the store.

pub mod drift;
