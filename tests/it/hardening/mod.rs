//! The security and robustness review's findings, each reproduced as a test that failed before
//! its fix: decision points, secrets, hostile ticket text, evidence at scale, and errors.

mod decision;
mod errors;
mod evidence;
mod hostile;
mod props;
mod secrets;
