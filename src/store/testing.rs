//! Stores for tests: a fresh SQLite file, or a fresh schema in the test PostgreSQL server.
//!
//! The PostgreSQL server is `DESKBRIDGE_TEST_POSTGRES` (default
//! `postgres://postgres@127.0.0.1:5432/test`, what `.ci/run` provides). A test that needs it
//! fails, naming the variable, when it is not reachable: it is never skipped.

use super::Store;

/// The test server's URL.
pub fn postgres_url() -> String {
    std::env::var("DESKBRIDGE_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A new empty schema on the test server; returns a URL whose connections use it.
pub async fn fresh_postgres_schema() -> String {
    use sqlx::Connection as _;
    sqlx::any::install_default_drivers();
    let base = postgres_url();
    let mut admin = sqlx::AnyConnection::connect(&base).await.unwrap_or_else(|e| {
        panic!("PostgreSQL for tests is not reachable at DESKBRIDGE_TEST_POSTGRES={base}: {e} (.ci/run installs and starts it)")
    });
    let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut admin)
        .await
        .expect("create schema");
    let separator = if base.contains('?') { '&' } else { '?' };
    format!("{base}{separator}options=-c%20search_path%3D{schema}")
}

/// A store in a new schema on the test server.
pub async fn fresh_postgres() -> Store {
    Store::connect_postgres(&fresh_postgres_schema().await)
        .await
        .expect("connect to the test PostgreSQL")
}
