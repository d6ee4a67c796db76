//! `deskbridge report access`: access granted through deskbridge's decisions, with the decision,
//! the grant evidence and the expiry; by default only what is held now (granted, or expired and
//! still present), with `--all` every lifecycle (approved and waiting, revoked, superseded).

use crate::store::lifecycle::LifecycleRow;
use crate::store::Store;

/// The lifecycles to report.
pub async fn access(store: &Store, all: bool) -> anyhow::Result<Vec<LifecycleRow>> {
    Ok(store
        .lifecycles()
        .await?
        .into_iter()
        .filter(|r| all || matches!(r.state.as_str(), "granted" | "expired"))
        .collect())
}

/// Renders the report as a table or JSON.
pub fn render(rows: &[LifecycleRow], format: super::drift::Format) -> anyhow::Result<String> {
    use super::drift::Format;
    Ok(match format {
        Format::Json => serde_json::to_string_pretty(rows)? + "\n",
        Format::Csv => {
            let mut writer = csv::Writer::from_writer(Vec::new());
            for r in rows {
                writer.serialize(r)?;
            }
            String::from_utf8(writer.into_inner()?)?
        }
        Format::Table if rows.is_empty() => "no access granted through deskbridge is held now\n".into(),
        Format::Table => {
            let mut out = format!(
                "{:<14}  {:<22}  {:<36}  {:<9}  {:<20}  {:<20}  {}\n",
                "TICKET", "WHO", "ENTITLEMENT (GROUP)", "STATE", "GRANTED", "EXPIRES", "DECISION"
            );
            let short = |t: &Option<String>| t.as_deref().map_or("-".to_owned(), |t| t.chars().take(19).collect());
            for r in rows {
                out.push_str(&format!(
                    "{:<14}  {:<22}  {:<36}  {:<9}  {:<20}  {:<20}  {}\n",
                    r.number,
                    crate::text::for_terminal(&r.beneficiary),
                    format!("{}/{} ({})", r.system_id, r.entitlement, r.group_name),
                    r.state,
                    short(&r.granted_at),
                    short(&r.expires_at),
                    r.decision_id
                ));
            }
            out.push_str(&format!("\n{} access lifecycle(s)\n", rows.len()));
            out
        }
    })
}
