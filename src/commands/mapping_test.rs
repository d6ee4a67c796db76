use std::path::Path;

use anyhow::Context as _;
use deskbridge_connector::Ticket;
use serde_json::Value;

use crate::mapping::Mapping;
use crate::schema::Normalized;

/// `deskbridge mapping test MAPPING TICKET.json`: prints the normalized request, or every
/// validation error. Returns whether the ticket normalized into a complete request (or was
/// classified as not one).
///
/// The ticket file is either a stored ticket (`{source, key, number, url, updated, version,
/// raw}`) or just the raw record the connector reads.
pub async fn mapping_test(mapping: &Path, ticket: &Path, config: Option<&Path>) -> anyhow::Result<(String, bool)> {
    let mapping = Mapping::load(mapping)?;
    let ticket = read_ticket(ticket)?;
    let mut normalized = mapping.normalize(&ticket);
    let ok = !matches!(normalized, Normalized::Incomplete { .. });
    // With a config, the request as the policy would see it: the catalog's and directory's facts.
    if let (Some(path), Normalized::AccessRequest { request }) = (config, &mut normalized) {
        if let Some(enricher) = crate::wiring::enricher(&crate::wiring::load(path)?)? {
            enricher.enrich(request).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        }
    }
    Ok((serde_json::to_string_pretty(&normalized)? + "\n", ok))
}

/// A ticket file: a stored ticket or the raw record a connector reads.
pub fn read_ticket(ticket: &Path) -> anyhow::Result<Ticket> {
    let text = std::fs::read_to_string(ticket).with_context(|| format!("reading ticket {}", ticket.display()))?;
    let value: Value = serde_json::from_str(&text).with_context(|| format!("ticket {} is not JSON", ticket.display()))?;
    crate::mapping::ticket_from_value(value, "mapping-test").with_context(|| format!("ticket {}", ticket.display()))
}

/// `deskbridge catalog check FILE [--mapping MAPPING TICKET.json…]`: validates the catalog
/// (every problem, with file:line:key) and shows what each ticket's ask resolves to.
pub fn catalog_check(file: &Path, mapping: Option<&Path>, tickets: &[std::path::PathBuf]) -> anyhow::Result<(String, bool)> {
    let catalog = crate::catalog::Catalog::load(file)?;
    let entitlements: usize = catalog.systems.values().map(|s| s.entitlements.len()).sum();
    let mut out = format!(
        "catalog {}: {} systems, {} entitlements, default owner {}\n",
        catalog.label(),
        catalog.systems.len(),
        entitlements,
        catalog.default_owner
    );
    let Some(mapping) = mapping else {
        return Ok((out, true));
    };
    let mapping = Mapping::load(mapping)?;
    for path in tickets {
        let ticket = read_ticket(path)?;
        let line = match mapping.normalize(&ticket) {
            Normalized::AccessRequest { request } => {
                let r = catalog.resolve(&request.target.system, &request.entitlement.id);
                match (&r.system, &r.entitlement) {
                    (Some(s), Some(e)) => format!(
                        "{}/{} → {}/{}: {}, at most {} days, {}, owner {}",
                        request.target.system,
                        request.entitlement.id,
                        s.id,
                        e.id,
                        serde_json::to_value(e.tier)?.as_str().unwrap_or_default(),
                        e.max_duration_days,
                        s.environment,
                        s.owner
                    ),
                    (Some(s), None) => format!(
                        "{}/{} → not in the catalog: reviewed by {}",
                        request.target.system, request.entitlement.id, s.owner
                    ),
                    (None, _) => format!(
                        "{}/{} → not in the catalog: reviewed by {}",
                        request.target.system, request.entitlement.id, r.owner
                    ),
                }
            }
            Normalized::Incomplete { problems, .. } => format!("incomplete ({} problems)", problems.len()),
            Normalized::NotAnAccessRequest { .. } => "not an access request".into(),
        };
        out.push_str(&format!("{}: {line}\n", crate::commands::table::terminal_safe(&ticket.number)));
    }
    Ok((out, true))
}
