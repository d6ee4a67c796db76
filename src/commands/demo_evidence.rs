//! The provisioning half of `deskbridge demo`: the SCIM simulator pushes signed SETs to
//! deskbridge's own `/events/scim` endpoint (served on loopback), so the demo shows one complete
//! lifecycle — decision, comment, grant, the "granted" comment, revocation — and one finding.

use std::sync::Arc;

use serde_json::json;

use crate::pipeline::Pipeline;
use crate::provisioning::{Provisioning, ProvisioningConfig};

const AUDIENCE: &str = "https://deskbridge.demo/events/scim";

/// Provisioning that trusts the SCIM simulator's SETs (its JWKS URL), with lifecycle comments.
pub(super) fn provisioning(scim: &deskbridge_scim::simulator::Simulator) -> anyhow::Result<Arc<Provisioning>> {
    let config: ProvisioningConfig = serde_json::from_value(json!({
        "sources": [{"kind": "set", "id": "scim", "issuer": scim.issuer(), "audience": AUDIENCE, "jwks_url": scim.jwks_url()}],
    }))?;
    // SETs name users and groups by SCIM id: the directory resolves them.
    let directory = crate::directory::DirectoryConfig::Scim(serde_json::from_value(json!({
        "base_url": scim.base_url(),
        "token": deskbridge_scim::simulator::TOKEN,
    }))?);
    Ok(Arc::new(Provisioning::build(&config, Some(&directory))?))
}

/// Serves deskbridge's HTTP side on loopback and points the SCIM simulator's SETs at it.
pub(super) async fn serve(
    pipeline: Arc<Pipeline>,
    scim: &deskbridge_scim::simulator::Simulator,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = crate::server::app(pipeline, Arc::new(tokio::sync::Notify::new()), Default::default());
    scim.set_receiver(Some(deskbridge_scim::simulator::Receiver {
        url: format!("http://{addr}/events/scim"),
        audience: AUDIENCE.into(),
        token: None,
    }));
    Ok(tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    }))
}

/// Grants, revokes and one unapproved grant in the directory; returns what the demo prints.
pub(super) async fn show(
    pipeline: &Pipeline,
    scim: &deskbridge_scim::simulator::Simulator,
    sim: &deskbridge_servicenow::simulator::Simulator,
    jira: &deskbridge_jira::simulator::Simulator,
) -> anyhow::Result<String> {
    let pass = || async {
        scim.flush_events().await;
        pipeline.run_once().await
    };
    // The provisioning tool carries out RITM0010001's approval, then removes it again; and
    // someone adds beth.anglin to the SAP posting-admin group the policy denied her.
    scim.add_to_group("abel.tuter", "jira-developers");
    pass().await?;
    pass().await?;
    scim.remove_from_group("abel.tuter", "jira-developers");
    scim.add_to_group("beth.anglin", "sap-fi-posting-admins");
    pass().await?;
    let store = pipeline.store();
    let refused = scim.deliveries().iter().filter(|d| d.status != 202).count();
    if refused > 0 {
        anyhow::bail!("deskbridge refused {refused} of the directory's SETs");
    }
    let mut out = format!(
        "\nProvisioning evidence: the SCIM directory pushed {} signed SETs (RFC 8935) to deskbridge's /events/scim; each was verified, then matched to the decisions.\n",
        scim.deliveries().len()
    );
    let Some(row) = store
        .lifecycles()
        .await?
        .into_iter()
        .find(|r| r.group_name == "jira-developers" && r.state == "revoked")
    else {
        anyhow::bail!("{out}the demo's grant was not matched to its decision");
    };
    out.push_str(&format!("\nLifecycle of {} (decision {}):\n", row.number, row.decision_id));
    for r in store.audit_for_ticket(&row.connector, &row.ticket_key).await? {
        if matches!(
            r.kind.as_str(),
            "decided" | "comment_posted" | "access_granted" | "access_revoked" | "access_expired"
        ) {
            let payload: serde_json::Value = serde_json::from_str(&r.payload).unwrap_or_default();
            out.push_str(&format!(
                "  #{:<5} {:<15} {}  [{}]\n",
                r.seq,
                r.kind,
                crate::audit::trace::summary(&r.kind, &payload),
                crate::audit::trace::short(&r.hash)
            ));
        }
    }
    // The comment on the ticket, from whichever ITSM holds it.
    let mut posted: Vec<String> = sim
        .sys_id_of("sc_req_item", &row.number)
        .map(|id| sim.journal(&id).into_iter().map(|e| e.value).collect())
        .unwrap_or_default();
    posted.extend(jira.comments(&row.number).into_iter().map(|c| c.text));
    if let Some(text) = posted.iter().find(|t| t.starts_with("Access granted")) {
        out.push_str(&format!(
            "\nComment posted on {} when the grant was observed:\n\n{}\n",
            row.number,
            super::demo::indent(text)
        ));
    } else {
        anyhow::bail!("{out}the \"granted\" comment is not on {}", row.number);
    }
    let findings = store.open_access_findings().await?;
    if findings.is_empty() {
        anyhow::bail!("{out}the demo's unapproved grant produced no finding");
    }
    out.push_str("\nProvisioning findings (also in `deskbridge report drift`):\n");
    for f in findings {
        out.push_str(&format!(
            "  {:<30} {:<12} {}\n",
            f.kind,
            if f.number.is_empty() { "-" } else { &f.number },
            f.detail
        ));
    }
    Ok(out)
}
