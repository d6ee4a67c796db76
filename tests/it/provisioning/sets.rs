//! Security Event Tokens that must not be believed: each refused with its RFC 8935 error code,
//! and nothing stored.

use base64::Engine as _;
use serde_json::{json, Value};

use super::{ProvApp, AUDIENCE};

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn claims(p: &ProvApp, group_id: &str) -> Value {
    json!({
        "iss": p.scim.issuer(),
        "iat": chrono::Utc::now().timestamp(),
        "jti": format!("{:016x}", rand::random::<u64>()),
        "aud": [AUDIENCE],
        "sub_id": {"format": "scim", "uri": format!("/Groups/{group_id}")},
        "events": {"urn:ietf:params:scim:event:prov:patch:full": {"data": {
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "add", "path": "members", "value": [{"value": "u-attacker"}]}]}}},
    })
}

/// A compact JWS with any header, signed by `key` (Ed25519).
fn jws(header: &Value, claims: &Value, key: &ed25519_dalek::SigningKey) -> String {
    use ed25519_dalek::Signer as _;
    let input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
    let signature = key.sign(input.as_bytes());
    format!("{input}.{}", b64(&signature.to_bytes()))
}

#[tokio::test]
async fn forged_unsigned_replayed_misaddressed_and_alg_none_sets_are_refused_and_nothing_is_stored() {
    let p = ProvApp::start(json!({})).await;
    let group = p.scim.group("jira-users").expect("group")["id"].as_str().expect("id").to_owned();
    let good = claims(&p, &group);
    let attacker = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    let header = json!({"alg": "EdDSA", "typ": "secevent+jwt", "kid": "sim-1"});
    let mut cases: Vec<(&str, String, &str)> = vec![
        (
            "forged: signed by another key under the directory's kid",
            jws(&header, &good, &attacker),
            "invalid_key",
        ),
        (
            "alg none, unsigned",
            format!(
                "{}.{}.",
                b64(br#"{"alg":"none","typ":"secevent+jwt"}"#),
                b64(good.to_string().as_bytes())
            ),
            "invalid_key",
        ),
        (
            "HS256 keyed with the public key (algorithm confusion)",
            format!(
                "{}.{}.AAAA",
                b64(br#"{"alg":"HS256","typ":"secevent+jwt","kid":"sim-1"}"#),
                b64(good.to_string().as_bytes())
            ),
            "invalid_key",
        ),
        (
            "unknown kid",
            jws(&json!({"alg": "EdDSA", "typ": "secevent+jwt", "kid": "k9"}), &good, &attacker),
            "invalid_key",
        ),
        ("not a JWS", "hello".into(), "invalid_request"),
        (
            "a JWT that is not a SET",
            {
                let mut c = good.clone();
                c["jti"] = json!("typ-jwt");
                let t = p.scim.sign_set(&c);
                let (_, rest) = t.split_once('.').expect("jws");
                // Same claims and signature, another typ: the signature no longer covers the header.
                format!("{}.{rest}", b64(br#"{"alg":"EdDSA","typ":"JWT","kid":"sim-1"}"#))
            },
            "invalid_request",
        ),
    ];
    let mut wrong_aud = good.clone();
    wrong_aud["aud"] = json!(["https://someone-else.example/events"]);
    wrong_aud["jti"] = json!("aud-1");
    cases.push(("wrongly addressed", p.scim.sign_set(&wrong_aud), "invalid_audience"));
    let mut wrong_iss = good.clone();
    wrong_iss["iss"] = json!("https://evil.example/scim/v2");
    wrong_iss["jti"] = json!("iss-1");
    cases.push(("another issuer", p.scim.sign_set(&wrong_iss), "invalid_issuer"));
    let mut old = good.clone();
    old["iat"] = json!(chrono::Utc::now().timestamp() - 3600);
    old["jti"] = json!("old-1");
    cases.push(("an old SET replayed past its age", p.scim.sign_set(&old), "invalid_request"));
    let mut with_sub = good.clone();
    with_sub["sub"] = json!("someone");
    with_sub["jti"] = json!("sub-1");
    cases.push(("sub instead of sub_id", p.scim.sign_set(&with_sub), "invalid_request"));

    let (events, audit) = (p.count("access_events").await, p.count("audit").await);
    for (what, token, code) in &cases {
        let (status, body) = p.post_set(token).await;
        assert_eq!((status, body["err"].as_str()), (400, Some(*code)), "{what}: {body}");
        assert!(body["description"].as_str().is_some_and(|d| !d.is_empty()), "{what}: {body}");
    }
    // The wrong media type.
    let response = p
        .http
        .post(format!("{}/events/scim", p.base))
        .header("content-type", "application/json")
        .body(p.scim.sign_set(&good))
        .send()
        .await
        .expect("post");
    assert_eq!(response.status().as_u16(), 400);
    assert_eq!(
        (p.count("access_events").await, p.count("audit").await),
        (events, audit),
        "nothing stored"
    );

    // The genuine SET is accepted once; the same SET again is a replay, refused, not stored.
    let genuine = p.scim.sign_set(&good);
    assert_eq!(p.post_set(&genuine).await.0, 202);
    let stored = p.count("access_events").await;
    assert_eq!(stored, events + 1);
    let (status, body) = p.post_set(&genuine).await;
    assert_eq!((status, body["err"].as_str()), (400, Some("invalid_request")), "{body}");
    assert!(
        body["description"].as_str().is_some_and(|d| d.contains("already received")),
        "{body}"
    );
    assert_eq!(p.count("access_events").await, stored);
}

#[tokio::test]
async fn a_source_that_requires_a_transmitter_token_refuses_without_it() {
    let app = crate::helpers::TestApp::spawn().await;
    let scim = deskbridge_scim::simulator::Simulator::start(Default::default())
        .await
        .expect("scim");
    let jwks = scim.jwks().to_string();
    let p = ProvApp::on(
        app,
        scim,
        json!({"sources": [{"kind": "set", "id": "scim", "issuer": "https://dir.example/scim/v2", "audience": AUDIENCE, "jwks": jwks, "token": "transmitter-token-1"}]}),
    )
    .await;
    let set = p.scim.sign_set(&json!({"iss": "https://dir.example/scim/v2"}));
    let (status, body) = p.post_set(&set).await;
    assert_eq!((status, body["err"].as_str()), (401, Some("authentication_failed")), "{body}");
    let response = p
        .http
        .post(format!("{}/events/scim", p.base))
        .header("content-type", "application/secevent+jwt")
        .bearer_auth("transmitter-token-1")
        .body(set)
        .send()
        .await
        .expect("post");
    // Past the token, the SET itself is checked (this one has no aud).
    assert_eq!(response.status().as_u16(), 400);
    assert_eq!(p.count("access_events").await, 0);
}

#[tokio::test]
async fn a_set_that_cannot_be_checked_now_is_answered_503_and_taken_when_sent_again() {
    use deskbridge_scim::simulator::{Fault, Target};
    let p = ProvApp::start(json!({})).await;
    let group = p.scim.group("jira-users").expect("group")["id"].as_str().expect("id").to_owned();
    let set = p.scim.sign_set(&claims(&p, &group));
    p.scim.inject_on(Target::path(Some("/jwks.json")), Fault::Status(503), 1);
    let response = p
        .http
        .post(format!("{}/events/scim", p.base))
        .header("content-type", "application/secevent+jwt")
        .body(set.clone())
        .send()
        .await
        .expect("post");
    assert_eq!(response.status().as_u16(), 503, "the transmitter keeps it and sends it again");
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(p.count("access_events").await, 0);
    assert_eq!(p.post_set(&set).await.0, 202);
    assert_eq!(p.count("access_events").await, 1);
    let metrics = deskbridge::metrics::global().encode();
    for line in [
        "deskbridge_access_deliveries_total{source=\"scim\",result=\"temporarily_unavailable\"}",
        "deskbridge_access_deliveries_total{source=\"scim\",result=\"accepted\"}",
    ] {
        assert!(metrics.contains(line), "{line} missing");
    }
}
