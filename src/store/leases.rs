//! Named leases: at most one holder at a time, taken over when the holder stops renewing.

use super::{later, now, Store};

impl Store {
    /// Takes or renews the lease `name` for this process. Returns whether it holds it now: it
    /// does when nobody held it, when it held it already, or when the holder's lease expired
    /// (the holder died or stalled).
    pub async fn try_lease(&self, name: &str) -> anyhow::Result<bool> {
        let taken = self
            .write_one(|| {
                sqlx::query(
                    "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
             WHERE leases.holder = excluded.holder OR leases.expires_at < $4",
                )
                .bind(name)
                .bind(&*self.holder)
                .bind(later(self.lease))
                .bind(now())
            })
            .await?;
        Ok(taken.rows_affected() > 0)
    }

    /// Gives the lease `name` up if this process holds it (on shutdown, so a replica that
    /// stops cleanly hands over at once instead of after the lease runs out).
    pub async fn release_lease(&self, name: &str) -> anyhow::Result<()> {
        self.write_one(|| {
            sqlx::query("DELETE FROM leases WHERE name = $1 AND holder = $2")
                .bind(name)
                .bind(&*self.holder)
        })
        .await?;
        Ok(())
    }

    /// Releases every claim this process holds on inbox rows and comments.
    pub async fn release_claims(&self) -> anyhow::Result<()> {
        for table in ["inbox", "outbox"] {
            let sql = format!("UPDATE {table} SET claimed_by = NULL, claimed_until = NULL WHERE claimed_by = $1");
            self.write_one(|| sqlx::query(&sql).bind(&*self.holder)).await?;
        }
        Ok(())
    }
}
