//! The simulator as a SET transmitter (RFC 8935 push of RFC 9967 SCIM events): membership
//! changes and deactivations are signed (EdDSA, key id `sim-1`, public JWKS at
//! `/jwks.json`) and POSTed in order to the configured receiver. Faults as real directories have
//! them: an event can be dropped (never sent, for reconciliation to find), and a revocation can
//! be "forgotten" (acknowledged, not applied, no event).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use base64::Engine as _;
use ed25519_dalek::pkcs8::EncodePrivateKey as _;
use serde_json::{json, Value};
use tokio::sync::mpsc;

/// Where SETs go.
#[derive(Debug, Clone)]
pub struct Receiver {
    /// The receiver's push endpoint (`http://…/events/<source>`).
    pub url: String,
    /// The `aud` to put in each SET.
    pub audience: String,
    /// A bearer token to send, when the receiver wants one.
    pub token: Option<String>,
}

/// One push attempt.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The compact SET.
    pub set: String,
    /// The receiver's status (0 when it could not be reached).
    pub status: u16,
    /// The receiver's body.
    pub body: String,
}

/// Signing key, queue and delivery log.
pub(crate) struct Transmitter {
    key: jsonwebtoken::EncodingKey,
    public: [u8; 32],
    receiver: Mutex<Option<Receiver>>,
    queue: mpsc::UnboundedSender<(String, Receiver)>,
    queued: AtomicUsize,
    done: AtomicUsize,
    deliveries: Mutex<Vec<Delivery>>,
    pub(crate) drop_next: AtomicUsize,
    pub(crate) forget_next_revocations: AtomicUsize,
}

impl Transmitter {
    /// A transmitter with a fresh key; its sender task runs until the simulator is dropped.
    pub(crate) fn start() -> std::sync::Arc<Self> {
        let signing = ed25519_dalek::SigningKey::from_bytes(&rand::random::<[u8; 32]>());
        let der = signing.to_pkcs8_der().expect("an Ed25519 key encodes as PKCS#8");
        let (tx, mut rx) = mpsc::unbounded_channel::<(String, Receiver)>();
        let me = std::sync::Arc::new(Self {
            key: jsonwebtoken::EncodingKey::from_ed_der(der.as_bytes()),
            public: signing.verifying_key().to_bytes(),
            receiver: Mutex::new(None),
            queue: tx,
            queued: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            deliveries: Mutex::new(Vec::new()),
            drop_next: AtomicUsize::new(0),
            forget_next_revocations: AtomicUsize::new(0),
        });
        let weak = std::sync::Arc::downgrade(&me);
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            // One at a time, in order: a receiver sees an add before the remove that follows it.
            while let Some((set, to)) = rx.recv().await {
                let mut request = client
                    .post(&to.url)
                    .header("content-type", "application/secevent+jwt")
                    .header("accept", "application/json")
                    .body(set.clone());
                if let Some(t) = &to.token {
                    request = request.bearer_auth(t);
                }
                let (status, body) = match request.send().await {
                    Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
                    Err(e) => (0, e.to_string()),
                };
                let Some(me) = weak.upgrade() else { return };
                if let Ok(mut log) = me.deliveries.lock() {
                    log.push(Delivery { set, status, body });
                }
                me.done.fetch_add(1, Ordering::SeqCst);
            }
        });
        me
    }

    pub(crate) fn set_receiver(&self, receiver: Option<Receiver>) {
        if let Ok(mut r) = self.receiver.lock() {
            *r = receiver;
        }
    }

    /// The public JWKS.
    pub(crate) fn jwks(&self) -> Value {
        let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.public);
        json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": x, "kid": "sim-1", "alg": "EdDSA", "use": "sig"}]})
    }

    /// Signs `claims` as a SET with this directory's key.
    pub(crate) fn sign(&self, claims: &Value) -> String {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        header.typ = Some("secevent+jwt".into());
        header.kid = Some("sim-1".into());
        jsonwebtoken::encode(&header, claims, &self.key).expect("an Ed25519 key signs any claims")
    }

    /// Signs and queues one SCIM event about `uri` (`/Groups/<id>` or `/Users/<id>`), unless no
    /// receiver is set or the next event is to be dropped.
    pub(crate) fn emit(&self, issuer: &str, uri: &str, event: &str, payload: Value) {
        let Some(to) = self.receiver.lock().ok().and_then(|r| r.clone()) else {
            return;
        };
        if Self::take(&self.drop_next) {
            return;
        }
        let jti = format!("{:016x}", rand::random::<u64>());
        let claims = json!({
            "iss": issuer,
            "iat": chrono_now(),
            "jti": jti,
            "txn": format!("tx-{jti}"),
            "aud": [to.audience],
            "sub_id": {"format": "scim", "uri": uri},
            "events": {format!("urn:ietf:params:scim:event:{event}"): payload},
        });
        let set = self.sign(&claims);
        self.queued.fetch_add(1, Ordering::SeqCst);
        if self.queue.send((set, to)).is_err() {
            self.done.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Waits until every queued SET was pushed (or 10 s passed).
    pub(crate) async fn flush(&self) {
        for _ in 0..1000 {
            if self.done.load(Ordering::SeqCst) >= self.queued.load(Ordering::SeqCst) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    pub(crate) fn deliveries(&self) -> Vec<Delivery> {
        self.deliveries.lock().map(|d| d.clone()).unwrap_or_default()
    }

    /// Takes one from `counter` if it is above zero.
    pub(crate) fn take(counter: &AtomicUsize) -> bool {
        counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}

fn chrono_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// The RFC 9967 `prov:patch:full` payload of a membership change.
pub(crate) fn membership_patch(version: &Value, added: &[String], removed: &[String]) -> Value {
    let list = |ids: &[String]| {
        ids.iter()
            .map(|id| json!({"value": id, "$ref": format!("/Users/{id}")}))
            .collect::<Vec<_>>()
    };
    let mut ops = Vec::new();
    if !added.is_empty() {
        ops.push(json!({"op": "add", "path": "members", "value": list(added)}));
    }
    if !removed.is_empty() {
        ops.push(json!({"op": "remove", "path": "members", "value": list(removed)}));
    }
    json!({"version": version, "data": {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": ops}})
}
