//! `deskbridge trace TICKET`: one ticket's timeline, raw → normalized → decision(s) →
//! comment(s), with hashes.

use serde_json::Value;

use crate::store::Store;

pub(crate) fn short(h: &str) -> &str {
    h.get(..12).unwrap_or(h)
}

pub(crate) fn summary(kind: &str, p: &Value) -> String {
    let s = |v: &Value| v.as_str().unwrap_or("-").to_owned();
    match kind {
        "ticket_seen" => format!(
            "version {}, raw sha256 {}",
            s(&p["version"]),
            short(p["raw_sha256"].as_str().unwrap_or("-"))
        ),
        "normalized" => {
            let request = &p["normalized"]["request"];
            let what = match (
                request["kind"].as_str(),
                request["entitlement"]["id"].as_str(),
                request["beneficiary"]["id"].as_str(),
            ) {
                (Some(k), Some(e), Some(b)) => format!(": {k} {e} for {b}"),
                _ => String::new(),
            };
            let hash = p["request_hash"]
                .as_str()
                .map(|h| format!(", request {}", short(h)))
                .unwrap_or_default();
            format!("{}{what}{hash}", s(&p["status"]))
        }
        "decided" => {
            let d = &p["decision"];
            let route = d["route_to"].as_str().map(|r| format!(" → {r}")).unwrap_or_default();
            format!(
                "{}{route} by {} {} (decision {}): {}",
                s(&d["outcome"]),
                s(&d["policy_id"]),
                s(&d["policy_version"]),
                s(&d["decision_id"]),
                d["reasons"][0].as_str().unwrap_or("")
            )
        }
        "superseded" => format!(
            "decision {} superseded by {}",
            s(&p["superseded_decision_id"]),
            s(&p["by_decision_id"])
        ),
        "itsm_approval" => format!(
            "ITSM approval {} (was {}), state {} (was {}) — evidence only",
            s(&p["approval"]),
            s(&p["previous_approval"]),
            s(&p["state"]),
            s(&p["previous_state"])
        ),
        "decision_failed" => format!("attempt {}: {}", p["attempt"], s(&p["error"])),
        "comment_queued" => format!(
            "{} (body sha256 {})",
            s(&p["marker"]),
            short(p["body_sha256"].as_str().unwrap_or("-"))
        ),
        "comment_posted" => format!(
            "comment {} for decision {}{}",
            s(&p["comment_id"]),
            s(&p["decision_id"]),
            if p["found_existing"] == Value::Bool(true) {
                " (found already posted)"
            } else {
                ""
            }
        ),
        "comment_failed" => format!("{}: {}", s(&p["marker"]), s(&p["error"])),
        "access_granted" => format!(
            "{} added to {} ({}) at {} via {} {}; matches decision {}; expires {}",
            s(&p["user"]),
            s(&p["group"]),
            s(&p["entitlement"]),
            s(&p["granted_at"]),
            s(&p["via"]),
            s(&p["source"]),
            s(&p["decision_id"]),
            s(&p["expires_at"])
        ),
        "access_revoked" => format!(
            "{} removed from {} at {} via {} {}{}",
            s(&p["user"]),
            s(&p["group"]),
            s(&p["revoked_at"]),
            s(&p["via"]),
            s(&p["source"]),
            if p["after_expiry"] == Value::Bool(true) {
                " (after expiry)"
            } else {
                " (before expiry)"
            }
        ),
        "access_expired" => format!(
            "expired at {}: {} {}",
            s(&p["expires_at"]),
            s(&p["user"]),
            if p["still_present"] == Value::Bool(true) {
                "is still in the group: revocation required"
            } else {
                "no longer holds it"
            }
        ),
        "access_finding" => format!("FINDING {}: {}", s(&p["kind"]), s(&p["detail"])),
        "access_finding_resolved" => format!("finding {} closed by later evidence", s(&p["kind"])),
        "enriched" => {
            let person = |who: &str| {
                let f = &p["context"][who];
                if f.is_null() {
                    format!("{who} unknown")
                } else {
                    format!(
                        "{who} {} ({})",
                        s(&f["user_name"]),
                        if f["active"] == Value::Bool(true) { "active" } else { "inactive" }
                    )
                }
            };
            let understated: Vec<String> = p["understated"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|u| {
                            format!(
                                "{} claimed {} (catalog: {})",
                                s(&u["claim"]),
                                s(&u["ticket_said"]),
                                s(&u["catalog_says"])
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            format!(
                "catalog {}: {} tier {}, owner {}; directory {}: {}, {}{}",
                s(&p["catalog"]["version"]),
                s(&p["catalog"]["entitlement"]["id"]),
                s(&p["catalog"]["entitlement"]["tier"]),
                s(&p["catalog"]["owner"]),
                s(&p["context"]["source"]),
                person("requester"),
                person("beneficiary"),
                if understated.is_empty() {
                    String::new()
                } else {
                    format!("; {}", understated.join("; "))
                }
            )
        }
        _ => p.to_string(),
    }
}

/// The timeline of every ticket whose number or key is `ticket`.
pub async fn trace(store: &Store, ticket: &str) -> anyhow::Result<String> {
    let found = store.find_tickets(ticket).await?;
    if found.is_empty() {
        anyhow::bail!("no ticket {ticket:?} in the store (give its number, e.g. RITM0010001, or its key)");
    }
    let mut out = String::new();
    for (connector, key, number, url) in found {
        out.push_str(&format!("{number}  connector {connector}, key {key}\n{url}\n"));
        for r in store.audit_for_ticket(&connector, &key).await? {
            let payload: Value = serde_json::from_str(&r.payload).unwrap_or(Value::Null);
            out.push_str(&format!(
                "  #{:<6} {}  {:<15} {}  [{}]\n",
                r.seq,
                r.at,
                r.kind,
                summary(&r.kind, &payload),
                short(&r.hash)
            ));
        }
        out.push('\n');
    }
    Ok(out)
}
