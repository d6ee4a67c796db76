//! The shared OAuth token chain ([`TokenVault`]): one row per connector, locked for a rotation
//! (`FOR UPDATE` on PostgreSQL; SQLite's single writer), so replicas take turns and each
//! rotation starts from the refresh token the previous one saved.

use async_trait::async_trait;
use deskbridge_connector::auth::{TokenVault, VaultGuard};
use secrecy::{ExposeSecret as _, SecretString};

use super::{now, Backend, Store};

/// The store as a [`TokenVault`].
pub struct StoreVault(Store);

impl Store {
    /// This store as the shared place for rotating OAuth refresh tokens.
    pub fn token_vault(&self) -> StoreVault {
        StoreVault(self.clone())
    }
}

struct Guard {
    tx: sqlx::Transaction<'static, sqlx::Any>,
    name: String,
    refresh: Option<SecretString>,
    access: Option<(SecretString, chrono::DateTime<chrono::Utc>)>,
}

#[async_trait]
impl TokenVault for StoreVault {
    async fn lock(&self, name: &str) -> Result<Box<dyn VaultGuard>, String> {
        let fail = |e: sqlx::Error| e.to_string();
        let mut tx = self.0.pool.begin().await.map_err(fail)?;
        // On SQLite this write also takes the database's write lock until commit.
        sqlx::query("INSERT INTO oauth_tokens (name) VALUES ($1) ON CONFLICT (name) DO NOTHING")
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(fail)?;
        let sql = match self.0.backend {
            Backend::Postgres => "SELECT refresh_token, access_token, expires_at FROM oauth_tokens WHERE name = $1 FOR UPDATE",
            Backend::Sqlite => "SELECT refresh_token, access_token, expires_at FROM oauth_tokens WHERE name = $1",
        };
        let (refresh, access, expires): (Option<String>, Option<String>, Option<String>) =
            sqlx::query_as(sql).bind(name).fetch_one(&mut *tx).await.map_err(fail)?;
        let expires = expires
            .and_then(|e| chrono::DateTime::parse_from_rfc3339(&e).ok())
            .map(|t| t.with_timezone(&chrono::Utc));
        Ok(Box::new(Guard {
            tx,
            name: name.to_owned(),
            refresh: refresh.map(SecretString::from),
            access: access.zip(expires).map(|(a, e)| (SecretString::from(a), e)),
        }))
    }
}

#[async_trait]
impl VaultGuard for Guard {
    fn refresh_token(&self) -> Option<SecretString> {
        self.refresh.clone()
    }

    fn access_token(&self) -> Option<(SecretString, chrono::DateTime<chrono::Utc>)> {
        self.access.clone()
    }

    async fn save(
        mut self: Box<Self>,
        refresh: &SecretString,
        access: &SecretString,
        expires_at: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), String> {
        sqlx::query("UPDATE oauth_tokens SET refresh_token = $1, access_token = $2, expires_at = $3, rotated_at = $4 WHERE name = $5")
            .bind(refresh.expose_secret())
            .bind(access.expose_secret())
            .bind(expires_at.to_rfc3339())
            .bind(now())
            .bind(&self.name)
            .execute(&mut *self.tx)
            .await
            .map_err(|e| e.to_string())?;
        self.tx.commit().await.map_err(|e| e.to_string())
    }
}
