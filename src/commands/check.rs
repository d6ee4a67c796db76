//! `deskbridge config check --config FILE`: every validation and start-up check `serve` runs,
//! plus a question to the directory and the decision point, posting nothing.

use std::path::Path;
use std::time::Duration;

use crate::schema::Normalized;

/// A sample request (a seeded ServiceNow ticket through the shipped mapping) to ask the
/// decision point: its answer is printed and used for nothing.
const PROBE_TICKET: &str = include_str!("../../tests/fixtures/servicenow/RITM0010002.json");

struct Checks {
    out: String,
    failed: usize,
}

impl Checks {
    fn add(&mut self, name: &str, result: Result<String, String>) {
        match result {
            Ok(detail) => self.out.push_str(&format!("ok    {name}: {detail}\n")),
            Err(why) => {
                self.failed += 1;
                self.out.push_str(&format!("FAIL  {name}: {why}\n"));
            }
        }
    }
}

fn probe_request() -> anyhow::Result<crate::schema::AccessRequest> {
    let mapping = crate::mapping::Mapping::parse(super::demo::SERVICENOW_MAPPING, "shipped mapping")?;
    let ticket = crate::mapping::ticket_from_value(serde_json::from_str(PROBE_TICKET)?, "config-check")?;
    match mapping.normalize(&ticket) {
        Normalized::AccessRequest { request } => Ok(*request),
        other => anyhow::bail!("the probe ticket did not normalize: {other:?}"),
    }
}

/// Runs every check; returns the report and whether all passed.
pub async fn config_check(path: &Path) -> anyhow::Result<(String, bool)> {
    let mut c = Checks {
        out: String::new(),
        failed: 0,
    };
    // Syntax, unknown keys, types, URLs, secrets: all reported at once, each with file:line.
    let config = match crate::wiring::load(path) {
        Ok(config) => config,
        Err(e) => {
            c.add("config", Err(format!("{e:#}")));
            return Ok((c.out, false));
        }
    };
    c.add("config", Ok(format!("{} parsed", path.display())));
    c.add(
        "audit signing key",
        crate::wiring::signer(&config.audit)
            .map(|s| if s.is_some() { "loaded".into() } else { "none configured".into() })
            .map_err(|e| format!("{e:#}")),
    );
    let built = match crate::wiring::build(&config, &path.display().to_string()) {
        Ok(built) => built,
        Err(e) => {
            c.add("connectors, mappings, decision point, template", Err(format!("{e:#}")));
            return Ok((c.out, false));
        }
    };
    c.add(
        "connectors, mappings, decision point, template",
        Ok(format!("{} connector(s) built", built.instances.len())),
    );
    match crate::store::Store::from_config(&config.store).await {
        Ok(store) => c.add(
            "store",
            store
                .ping(Duration::from_secs(5))
                .await
                .map(|()| format!("{:?} reachable, schema up to date", store.backend()).to_lowercase())
                .map_err(|e| format!("{e:#}")),
        ),
        Err(e) => c.add("store", Err(format!("{e:#}"))),
    }
    for instance in &built.instances {
        let id = instance.connector.id();
        c.add(
            &format!("connector {id}"),
            instance
                .connector
                .check()
                .await
                .map(|()| {
                    format!(
                        "{}: credentials accepted, permissions and fields present",
                        instance.connector.kind()
                    )
                })
                .map_err(|e| e.to_string()),
        );
    }
    let request = probe_request()?;
    if let Some(enricher) = &built.enricher {
        c.add("catalog", Ok(format!("{} loaded", enricher.catalog.get().label())));
        if let Some(directory) = &enricher.directory {
            let key = request.requester.id.clone();
            c.add(
                "directory",
                directory.lookup(std::slice::from_ref(&key)).await.map(|found| {
                    let known = found.get(&key).is_some_and(Option::is_some);
                    format!(
                        "{} answers (looked up {key:?}: {})",
                        directory.describe(),
                        if known { "found" } else { "not known" }
                    )
                }),
            );
        } else {
            c.add(
                "directory",
                Ok("none configured: identities stay unverified and requests are reviewed".into()),
            );
        }
    } else {
        c.add(
            "catalog",
            Ok("none configured: every request is reviewed as not in the catalog".into()),
        );
    }
    if let Some(prov) = &built.provisioning {
        for (id, source) in prov.sources() {
            let result = match source {
                crate::provisioning::Source::Set { verifier, .. } => verifier.check_keys().await,
                crate::provisioning::Source::Webhook(_) => Ok("signed JSON webhook, HMAC secret set".into()),
            };
            c.add(&format!("event source {id} (POST /events/{id})"), result);
        }
    }
    for (name, point) in
        std::iter::once(("decision point", &built.decision_point)).chain(built.shadow.as_ref().map(|s| ("shadow decision point", s)))
    {
        c.add(
            name,
            point
                .decide(&request)
                .await
                .map(|d| format!("{} answered {} for a sample request", point.describe(), d.decision.outcome.as_str()))
                .map_err(|e| format!("{}: {e}", point.describe())),
        );
    }
    let ok = c.failed == 0;
    c.out.push_str(&if ok {
        "\nall checks passed; nothing was posted\n".to_owned()
    } else {
        format!("\n{} check(s) failed; nothing was posted\n", c.failed)
    });
    Ok((c.out, ok))
}
