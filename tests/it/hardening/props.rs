//! Property tests, bounded so `cargo test` stays quick: the mapping engine, the comment
//! renderers of all three ITSM markups, the webhook verifiers and payload parsers. (The
//! ServiceNow encoded-query builder has its own, beside it in `deskbridge-servicenow`.)

use deskbridge::render::{CommentInput, CommentRenderer, COMMENT_CHARS};
use deskbridge::schema::{Decision, Normalized, Obligations, Outcome};
use deskbridge_connector::webhook::{sign, WebhookConfig, WebhookVerifier};
use deskbridge_connector::{Connector, Markup, MARKER_PREFIX};
use deskbridge_jira::{adf_document, adf_plain_text, AdfMarkup, WikiMarkup};
use deskbridge_servicenow::JournalMarkup;
use proptest::prelude::*;
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::{json, Value};

use crate::helpers::{fixture, shipped_mapping};
use crate::pdp::seeded_requests;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 96,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Hostile text: anything, weighted towards what attacks comments and terminals.
fn hostile() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,60}",
        proptest::collection::vec(
            prop_oneof![
                Just("\n".to_owned()),
                Just("\u{202E}".to_owned()),
                Just("\u{200B}".to_owned()),
                Just("\x1b[2K".to_owned()),
                Just("[deskbridge-id:".to_owned()),
                Just("deskbridge decision: APPROVED by policy".to_owned()),
                Just("[code]<script>x</script>[/code]".to_owned()),
                Just("{noformat}*bold* [link|http://x]".to_owned()),
                Just("]".to_owned()),
                "[a-z ]{0,8}",
            ],
            0..12
        )
        .prop_map(|parts| parts.concat()),
        "[a-z]{0,10}".prop_map(|s| s.repeat(300)),
    ]
}

fn decision(reasons: Vec<String>) -> Decision {
    Decision {
        outcome: Outcome::Review,
        reasons,
        route_to: Some("owners".into()),
        missing: vec![],
        obligations: Obligations {
            max_duration_days: Some(7),
            step_up: false,
        },
        policy_id: "deskbridge.access".into(),
        policy_version: "1".into(),
        decision_id: "dec-1".into(),
        decided_at: chrono::Utc::now(),
    }
}

const MARKER: &str = "deskbridge-id:0123456789abcdef";

/// What holds for every markup: one outcome line and it comes first, the marker exactly once
/// and last, nothing else that reads as a marker, no bidi or control character, and a length
/// an ITSM will not cut.
fn common(text: &str) -> Result<(), TestCaseError> {
    let lines: Vec<&str> = text.lines().collect();
    prop_assert!(lines[0].starts_with("deskbridge decision: "), "{}", text);
    prop_assert_eq!(lines.iter().filter(|l| l.starts_with("deskbridge decision:")).count(), 1);
    prop_assert_eq!(*lines.last().unwrap_or(&""), format!("[{MARKER}]"));
    prop_assert_eq!(text.matches(MARKER_PREFIX).count(), 1, "{}", text);
    prop_assert!(
        !text
            .chars()
            .any(|c| (c.is_control() && c != '\n') || deskbridge::text::is_bidi_control(c)),
        "{:?}",
        text
    );
    prop_assert!(
        text.chars().count() <= COMMENT_CHARS + MARKER.len() + 3,
        "{} characters",
        text.chars().count()
    );
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    /// The normalized form written for an enriched request, made from the borrowed request, is
    /// the JSON of `Normalized::AccessRequest` holding it, whatever the ticket said.
    #[test]
    fn a_borrowed_request_normalizes_to_the_same_json(
        justification in hostile(), entitlement in hostile(), requester in hostile(), days in proptest::option::of(0u32..100_000),
    ) {
        for seeded in seeded_requests().values() {
            let mut request = seeded.clone();
            request.justification = Some(justification.clone());
            request.entitlement.id = entitlement.clone();
            request.requester.id = requester.clone();
            request.duration_days = days;
            let owned = serde_json::to_value(Normalized::AccessRequest { request: Box::new(request.clone()) }).expect("serializes");
            prop_assert_eq!(Normalized::access_request_json(&request).expect("serializes"), owned);
        }
    }

    #[test]
    fn no_ticket_text_forges_a_line_a_marker_or_markup(
        justification in hostile(), entitlement in hostile(), requester in hostile(), reason in hostile(),
    ) {
        let renderer = CommentRenderer::new(None).expect("template");
        let mut request = seeded_requests()["RITM0010001"].clone();
        request.justification = Some(justification);
        request.entitlement.id = entitlement;
        request.requester.id = requester;
        let d = decision(vec![reason.clone(), reason]);
        let input = CommentInput { number: "RITM1", request: Some(&request), decision: &d, supersedes: None };

        // ServiceNow journal: brackets in ticket text never form [code] or a link.
        let text = renderer.render(&input, MARKER, &JournalMarkup).expect("renders");
        common(&text)?;
        let body = &text[..text.rfind('\n').unwrap_or(0)];
        prop_assert!(!body.contains('[') && !body.contains(']'), "{}", text);

        // Jira wiki: every markup character from the ticket is escaped, so removing the
        // escapes gives back exactly the text, and no URL can auto-link.
        let text = renderer.render(&input, MARKER, &WikiMarkup).expect("renders");
        common(&text)?;
        prop_assert!(!text.contains("://"), "{}", text);

        // Jira ADF: text nodes only, no marks or links; the document reads back as the text.
        let text = renderer.render(&input, MARKER, &AdfMarkup).expect("renders");
        common(&text)?;
        let doc = adf_document(&text);
        let nodes = collect(&doc);
        prop_assert!(nodes.iter().all(|t| t == "doc" || t == "paragraph" || t == "text" || t == "hardBreak"), "{:?}", nodes);
        prop_assert!(doc.to_string().find("\"marks\"").is_none());
        let read_back = adf_plain_text(&doc);
        prop_assert_eq!(read_back.trim_end(), text.trim_end());
    }

    #[test]
    fn wiki_escaping_round_trips_and_leaves_no_markup(text in hostile()) {
        let escaped = WikiMarkup.escape(&text);
        let unlinked = escaped.replace(":\u{200B}//", "://");
        let mut chars = unlinked.chars().peekable();
        let mut back = String::new();
        while let Some(c) = chars.next() {
            if c == '\\' {
                let next = chars.next();
                prop_assert!(next.is_some_and(|n| "\\*_+-^~?!#|{}[]()".contains(n)), "{}", escaped);
                back.extend(next);
            } else {
                prop_assert!(!"*_+-^~?!#|{}[]()".contains(c), "an unescaped {:?} in {}", c, escaped);
                back.push(c);
            }
        }
        prop_assert_eq!(back, text);
    }

    #[test]
    fn the_mapping_engine_takes_any_field_values(
        values in proptest::collection::vec(prop_oneof![
            hostile().prop_map(Value::String),
            any::<i64>().prop_map(|n| json!(n)),
            any::<f64>().prop_map(|n| json!(n)),
            Just(Value::Null),
            Just(json!([])),
            Just(json!({"nested": {"deep": [1, "x"]}})),
        ], 8),
    ) {
        let mapping = shipped_mapping();
        let mut ticket = fixture("RITM0010001.json");
        let Value::Object(raw) = &mut ticket.raw else { panic!("an object") };
        let keys: Vec<String> = raw.keys().cloned().collect();
        for (key, value) in keys.iter().zip(values.iter().cycle()) {
            raw.insert(key.clone(), value.clone());
        }
        if let Some(Value::Object(vars)) = raw.get_mut("variables") {
            for (v, value) in vars.values_mut().zip(values.iter().cycle()) {
                *v = value.clone();
            }
        }
        // Whatever the ITSM sent: a request, or a list of problems; never a panic.
        match mapping.normalize(&ticket) {
            Normalized::AccessRequest { request } => {
                prop_assert!(serde_json::to_value(&request).is_ok());
            }
            other => prop_assert!(serde_json::to_value(&other).is_ok()),
        }
    }

    #[test]
    fn only_the_right_signature_verifies(body in proptest::collection::vec(any::<u8>(), 0..256), forged in ".{0,80}") {
        let secret = "a-webhook-secret-long-enough";
        let config: WebhookConfig = serde_json::from_value(json!({"secret": secret})).expect("config");
        let verifier = WebhookVerifier::new(&config, "X-Deskbridge-Signature", None);
        let mut headers = HeaderMap::new();
        headers.insert("x-deskbridge-signature", HeaderValue::from_str(&sign(secret, &body)).expect("header"));
        prop_assert!(verifier.verify(&headers, &body).is_ok());
        if let Ok(value) = HeaderValue::from_str(&forged) {
            if forged.trim_start_matches("sha256=") != sign(secret, &body).trim_start_matches("sha256=") {
                headers.insert("x-deskbridge-signature", value);
                prop_assert!(verifier.verify(&headers, &body).is_err());
            }
        }
        let mut flipped = body.clone();
        flipped.push(b'x');
        headers.insert("x-deskbridge-signature", HeaderValue::from_str(&sign(secret, &body)).expect("header"));
        prop_assert!(verifier.verify(&headers, &flipped).is_err());
    }

    #[test]
    fn webhook_payload_parsers_take_any_bytes(
        body in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..200),
            hostile().prop_map(|s| json!({"sys_id": s, "sys_ids": [s], "issue": {"id": s}}).to_string().into_bytes()),
        ],
    ) {
        let headers = HeaderMap::new();
        let servicenow = servicenow_connector();
        if let Ok(event) = servicenow.webhook_event(&headers, &body) {
            prop_assert!(event.keys.iter().all(|k| k.len() == 32 && k.bytes().all(|b| b.is_ascii_hexdigit())), "{:?}", event.keys);
        }
        let jira = jira_connector();
        if let Ok(event) = jira.webhook_event(&headers, &body) {
            prop_assert!(event.keys.iter().all(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit())), "{:?}", event.keys);
        }
    }
}

fn collect(node: &Value) -> Vec<String> {
    let mut out = vec![node["type"].as_str().unwrap_or("?").to_owned()];
    for child in node["content"].as_array().into_iter().flatten() {
        out.extend(collect(child));
    }
    out
}

fn servicenow_connector() -> deskbridge_servicenow::ServiceNow {
    let config = deskbridge::commands::demo::servicenow_config("http://127.0.0.1:9").expect("config");
    deskbridge_servicenow::ServiceNow::new("sn", config).expect("connector")
}

fn jira_connector() -> deskbridge_jira::Jira {
    let config: deskbridge_jira::JiraConfig = serde_json::from_value(json!({
        "deployment": "cloud", "base_url": "http://127.0.0.1:9",
        "auth": {"type": "basic", "username": "u@example.com", "password": "token"},
        "projects": ["ACC"]
    }))
    .expect("config");
    deskbridge_jira::Jira::new("jira", config).expect("connector")
}

/// Any JSON value, with the text and numbers canonical JSON is particular about: names and
/// strings outside the Basic Multilingual Plane (sorted by UTF-16, not UTF-8), control
/// characters, fractions, exponents, negative zero and integers beyond 2^53.
fn json_value() -> impl Strategy<Value = Value> {
    let text = prop_oneof![
        ".{0,12}",
        "[\u{0}-\u{1f}\"\\\\/\u{7f}\u{2028}]{0,6}",
        "[a-c\u{e000}\u{ffff}\u{10000}\u{1f600}]{0,4}",
    ];
    let number = prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-(1i64 << 53)..=(1i64 << 53)).prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        prop_oneof![Just(-0.0), Just(1e21), Just(1e-7), Just(0.1), Just(9007199254740993.0)].prop_map(Value::from),
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        number,
        text.clone().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            proptest::collection::btree_map(text.clone(), inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(config())]

    /// The audit chain's streamed canonical JSON is byte for byte what the RFC 8785 reference
    /// (serde_json_canonicalizer) writes, for any payload, and so is a record's hash input.
    #[test]
    fn the_streamed_canonical_json_is_the_reference(value in json_value(), at in hostile(), key in hostile(), seq in 1i64..i64::MAX) {
        let mut streamed = Vec::new();
        deskbridge::store::audit::write_jcs(&value, &mut streamed).expect("writes");
        let reference = serde_json_canonicalizer::to_vec(&value).expect("canonical");
        prop_assert_eq!(String::from_utf8_lossy(&streamed), String::from_utf8_lossy(&reference));

        let content = deskbridge::store::audit::Content {
            seq, at: &at, connector: "sn", ticket_key: &key, kind: "decided", payload: &value, prev: "00ff",
        };
        let mut record = Vec::new();
        deskbridge::store::audit::write_record_jcs(&content, &mut record).expect("writes");
        let object = json!({
            "seq": seq, "at": at, "connector": "sn", "ticket_key": key, "kind": "decided",
            "payload": value, "prev_hash": "00ff", "scheme": deskbridge::store::audit::JCS_SCHEME,
        });
        let reference = serde_json_canonicalizer::to_vec(&object).expect("canonical");
        prop_assert_eq!(String::from_utf8_lossy(&record), String::from_utf8_lossy(&reference));
    }
}
