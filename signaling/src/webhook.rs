//! Webhooks: the room facts the store reports ([`RoomFact`]), posted to the application's
//! backend as signed JSON events. `docs/api.md` documents the events and how to verify them.
//!
//! # Guarantees
//!
//! - **One pod per event.** Each fact is reported by the one store operation that made it
//!   happen (an atomic script on Redis), so exactly one pod sees it and posts it; no claim or
//!   coordination is needed. Abandoned rooms (every pod of their participants died) are swept
//!   by whichever pod's [`RoomStore::sweep`] gets there first, and reported once.
//! - **Never slows signaling.** A fact becomes an event and is put on each URL's bounded queue
//!   with `try_send`, on the store call's own path, without waiting; a full queue drops the
//!   event and counts it (`webhook_events_dropped_total{reason="queue_full"}`).
//! - **Retries.** Each URL has one delivery task, posting its events in order. A failure (no
//!   answer within the timeout, or a non-2xx status) is retried with exponential backoff from
//!   250 ms, capped at 5 s, until `retry_for` has passed since the first attempt; then the
//!   event is dropped and counted (`reason="retries_exhausted"`).
//! - **Ids.** Every event has a random `id`, the same on every retry, so a backend can
//!   deduplicate (a receiver that processed an event but whose answer was lost gets it again).
//!
//! # Caveats
//!
//! Queued events live in the pod's memory: a pod that dies loses what it had not delivered.
//! Delivery is at least once per URL while the pod lives, at most once across its death.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::ids::RoomId;
use crate::metrics::{Metrics, ReasonLabel};
use crate::store::{FactSink, ParticipantEntry, RoomFact, RoomStore};

/// The first retry waits this long; each next one twice as long, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long a signature stays valid: receivers refuse older ones (replays).
const SIGNATURE_LIFETIME: Duration = Duration::from_secs(300);
/// The shortest signing secret, as for HS256 join-token keys.
const MIN_SECRET_BYTES: usize = 32;

/// Why webhooks cannot start.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("--webhook-url {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("--webhook-url is set but --webhook-key is not: webhooks must be signed")]
    NoKey,
    #[error("--webhook-key must be KID=SECRET with a secret of at least {MIN_SECRET_BYTES} bytes")]
    BadKey,
    #[error("--webhook-queue must be at least 1")]
    NoQueue,
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

/// What webhooks need to know.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Where every event is posted.
    pub urls: Vec<String>,
    /// The signing key as `KID=SECRET`.
    pub key: String,
    /// Events queued per URL before new ones are dropped.
    pub queue: usize,
    /// How long an event is retried, from its first attempt.
    pub retry_for: Duration,
    /// How long one attempt may take.
    pub timeout: Duration,
}

/// One event as posted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// Random, the same on every retry.
    pub id: String,
    /// `room_started`, `room_finished`, `participant_joined`, `participant_left` or
    /// `participant_connection_lost`.
    pub event: &'static str,
    /// When the pod saw it, in Unix milliseconds.
    pub created_at: u64,
    pub room: RoomId,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub participant: Option<EventParticipant>,
    /// Why a participant left (`participant_left` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
}

/// The participant an event is about: never its resume token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventParticipant {
    pub id: String,
    pub user: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub pod: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub joined_at: Option<u64>,
}

impl From<&ParticipantEntry> for EventParticipant {
    fn from(entry: &ParticipantEntry) -> Self {
        EventParticipant {
            id: entry.id.as_str().to_owned(),
            user: entry.user.as_str().to_owned(),
            name: entry.name.as_ref().map(|n| n.as_str().to_owned()),
            pod: entry.pod.clone(),
            joined_at: entry.joined_at,
        }
    }
}

impl Event {
    /// The event for a fact, with a fresh id.
    pub fn from_fact(room: &RoomId, fact: &RoomFact, now_ms: u64) -> Self {
        let (event, participant, reason) = match fact {
            RoomFact::Started => ("room_started", None, None),
            RoomFact::Finished => ("room_finished", None, None),
            RoomFact::Joined(entry) => ("participant_joined", Some(entry.into()), None),
            RoomFact::Left(entry, reason) => (
                "participant_left",
                Some(entry.into()),
                Some(reason.as_str()),
            ),
            RoomFact::ConnectionLost(entry) => {
                ("participant_connection_lost", Some(entry.into()), None)
            }
        };
        Event {
            id: format!("ev-{}", crate::ids::random_hex(16)),
            event,
            created_at: now_ms,
            room: room.clone(),
            participant,
            reason,
        }
    }
}

/// The claims of a webhook signature: a JWT over the body's SHA-256.
#[derive(Debug, Serialize)]
struct SignatureClaims {
    iss: &'static str,
    iat: u64,
    exp: u64,
    /// Standard base64 of the SHA-256 of the exact body bytes.
    sha256: String,
}

/// Signs webhook bodies: an HS256 JWT whose `sha256` claim is the body's digest.
pub struct Signer {
    kid: String,
    key: jsonwebtoken::EncodingKey,
}

impl Signer {
    /// A signer from `KID=SECRET`.
    pub fn new(key: &str) -> Result<Self, WebhookError> {
        let (kid, secret) = key.split_once('=').ok_or(WebhookError::BadKey)?;
        if kid.is_empty() || secret.len() < MIN_SECRET_BYTES {
            return Err(WebhookError::BadKey);
        }
        // The same provider the join-token code installs; harmless when already there.
        let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
        Ok(Signer {
            kid: kid.to_owned(),
            key: jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        })
    }

    /// The `Authorization` header value for `body`, signed at `now` (Unix seconds).
    pub fn authorization(&self, body: &[u8], now: u64) -> Result<String, String> {
        let digest = Sha256::digest(body);
        let claims = SignatureClaims {
            iss: "switchboard",
            iat: now,
            exp: now + SIGNATURE_LIFETIME.as_secs(),
            sha256: base64::engine::general_purpose::STANDARD.encode(digest),
        };
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.key)
            .map(|jwt| format!("Bearer {jwt}"))
            .map_err(|e| e.to_string())
    }
}

/// An event and its body, shared by every URL's queue.
type Queued = Arc<(Event, Vec<u8>)>;

/// The per-URL queues the fact sink feeds.
pub struct Webhooks {
    queues: Vec<(String, mpsc::Sender<Queued>)>,
    dropped: Family<ReasonLabel, Counter>,
}

impl Webhooks {
    /// Validates the configuration, starts one delivery task per URL and the sweep of
    /// abandoned rooms, and has `store` report its facts here.
    pub fn start(
        config: &WebhookConfig,
        store: Arc<dyn RoomStore>,
        metrics: &Metrics,
    ) -> Result<Arc<Self>, WebhookError> {
        if config.key.is_empty() {
            return Err(WebhookError::NoKey);
        }
        if config.queue == 0 {
            return Err(WebhookError::NoQueue);
        }
        let signer = Arc::new(Signer::new(&config.key)?);
        for url in &config.urls {
            let parsed = reqwest::Url::parse(url).map_err(|e| WebhookError::BadUrl {
                url: url.clone(),
                reason: e.to_string(),
            })?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(WebhookError::BadUrl {
                    url: url.clone(),
                    reason: "must be http:// or https://".to_owned(),
                });
            }
        }
        // reqwest's rustls comes without a crypto provider here (`rustls-no-provider`).
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(|e| WebhookError::Client(e.to_string()))?;
        let mut queues = Vec::new();
        for url in &config.urls {
            let (tx, rx) = mpsc::channel(config.queue);
            let delivery = Delivery {
                url: url.clone(),
                http: http.clone(),
                signer: signer.clone(),
                retry_for: config.retry_for,
                delivered: metrics.webhook_delivered.clone(),
                failed: metrics.webhook_failed_attempts.clone(),
                dropped: metrics.webhook_dropped.clone(),
            };
            tokio::spawn(delivery.run(rx));
            queues.push((url.clone(), tx));
        }
        let webhooks = Arc::new(Webhooks {
            queues,
            dropped: metrics.webhook_dropped.clone(),
        });
        let sink = webhooks.clone();
        store.report_facts(FactSink::new(move |room, fact| sink.enqueue(room, &fact)));
        tokio::spawn(sweep(store));
        Ok(webhooks)
    }

    /// Turns a fact into an event and queues it for every URL, never waiting.
    fn enqueue(&self, room: &RoomId, fact: &RoomFact) {
        let event = Event::from_fact(room, fact, unix_ms());
        let body = match serde_json::to_vec(&event) {
            Ok(body) => body,
            Err(error) => {
                tracing::warn!(%error, "cannot encode a webhook event");
                return;
            }
        };
        let item = Arc::new((event, body));
        for (url, queue) in &self.queues {
            if queue.try_send(item.clone()).is_err() {
                self.dropped
                    .get_or_create(&ReasonLabel {
                        reason: "queue_full",
                    })
                    .inc();
                tracing::warn!(%url, event = item.0.event, id = %item.0.id, "webhook queue full; event dropped");
            }
        }
    }
}

/// Every second, prunes the rooms whose pods all died, so their end is reported.
async fn sweep(store: Arc<dyn RoomStore>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(error) = store.sweep().await {
            tracing::debug!(%error, "cannot sweep abandoned rooms");
        }
    }
}

/// One URL's delivery task.
struct Delivery {
    url: String,
    http: reqwest::Client,
    signer: Arc<Signer>,
    retry_for: Duration,
    delivered: Counter,
    failed: Counter,
    dropped: Family<ReasonLabel, Counter>,
}

impl Delivery {
    async fn run(self, mut queue: mpsc::Receiver<Queued>) {
        while let Some(item) = queue.recv().await {
            let (event, body) = &*item;
            if self.deliver(event, body).await {
                self.delivered.inc();
            } else {
                self.dropped
                    .get_or_create(&ReasonLabel {
                        reason: "retries_exhausted",
                    })
                    .inc();
                tracing::warn!(url = %self.url, event = event.event, id = %event.id, "webhook not accepted within the retry bound; dropped");
            }
        }
    }

    /// Posts one event until it is accepted or the retry bound has passed.
    async fn deliver(&self, event: &Event, body: &[u8]) -> bool {
        let started = tokio::time::Instant::now();
        let mut backoff = FIRST_BACKOFF;
        loop {
            match self.attempt(body).await {
                Ok(()) => return true,
                Err(why) => {
                    self.failed.inc();
                    tracing::debug!(url = %self.url, id = %event.id, %why, "webhook attempt failed");
                }
            }
            if started.elapsed() + backoff > self.retry_for {
                return false;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    async fn attempt(&self, body: &[u8]) -> Result<(), String> {
        // Signed per attempt, so a retry long after the event still has a fresh signature.
        let authorization = self.signer.authorization(body, unix_ms() / 1000)?;
        let response = self
            .http
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(reqwest::header::AUTHORIZATION, authorization)
            .body(body.to_vec())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!("status {}", response.status()))
        }
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{ParticipantId, UserId};
    use crate::protocol::LeaveReason;

    fn entry() -> ParticipantEntry {
        ParticipantEntry {
            id: ParticipantId::parse("p-1").unwrap(),
            user: UserId::parse("alice").unwrap(),
            name: None,
            pod: "pod-a".to_owned(),
            resume: Some(crate::protocol::ResumeToken::parse("rt1.secret.p-1").unwrap()),
            joined_at: Some(1_764_600_000_000),
        }
    }

    /// Events have the documented shape, and never carry the resume token.
    #[test]
    fn event_json_shape() {
        let room = RoomId::parse("standup").unwrap();
        let left = Event::from_fact(&room, &RoomFact::Left(entry(), LeaveReason::Kicked), 7);
        let json = serde_json::to_value(&left).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "id": left.id, "event": "participant_left", "createdAt": 7, "room": "standup",
                "participant": {"id": "p-1", "user": "alice", "pod": "pod-a", "joinedAt": 1_764_600_000_000u64},
                "reason": "kicked"
            })
        );
        assert!(!serde_json::to_string(&left).unwrap().contains("rt1."));
        let finished = Event::from_fact(&room, &RoomFact::Finished, 8);
        assert_eq!(
            serde_json::to_value(&finished).unwrap(),
            serde_json::json!({"id": finished.id, "event": "room_finished", "createdAt": 8, "room": "standup"})
        );
        assert_ne!(left.id, finished.id, "ids are fresh");
    }

    /// The signature is an HS256 JWT whose `sha256` claim is the body's digest, verifiable
    /// with the shared secret.
    #[test]
    fn signature_carries_the_body_digest() {
        let secret = "webhook-secret-0123456789abcdef-xyz";
        let signer = Signer::new(&format!("wh={secret}")).unwrap();
        let body = br#"{"event":"room_started"}"#;
        let now = unix_ms() / 1000;
        let header = signer.authorization(body, now).unwrap();
        let jwt = header.strip_prefix("Bearer ").unwrap();
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.set_required_spec_claims(&["exp"]);
        let claims = jsonwebtoken::decode::<serde_json::Value>(
            jwt,
            &jsonwebtoken::DecodingKey::from_secret(secret.as_bytes()),
            &validation,
        )
        .unwrap()
        .claims;
        let want = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(body));
        assert_eq!(claims["sha256"], want);
        assert_eq!(claims["iss"], "switchboard");
        assert!(Signer::new("wh=short").is_err());
        assert!(Signer::new("no-separator").is_err());
    }
}
