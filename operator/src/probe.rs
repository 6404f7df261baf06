//! The HTTP prober: one task per SfuNode with a `healthCheck`, recording results for
//! [`crate::health::evaluate`] to judge.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchboard_crds::{HttpHealthCheck, SfuKind, SfuNode};
use tokio::task::JoinHandle;

use crate::health::ProbeRecord;
use crate::keys::NodeKey;

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("cannot build the HTTP client for health checks: {0}")]
    Client(#[from] reqwest::Error),
}

type Records = Arc<Mutex<HashMap<NodeKey, ProbeRecord>>>;
/// What a probe task was started for: a change of either restarts it.
type ProbeTarget = (HttpHealthCheck, SfuKind);

/// Runs and tracks the probe tasks.
pub struct Prober {
    client: reqwest::Client,
    records: Records,
    tasks: Mutex<HashMap<NodeKey, (ProbeTarget, JoinHandle<()>)>>,
}

impl Prober {
    pub fn new() -> Result<Self, ProbeError> {
        let client = reqwest::Client::builder()
            // Probes must not follow a redirect to somewhere else and call that healthy.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Prober {
            client,
            records: Records::default(),
            tasks: Mutex::new(HashMap::new()),
        })
    }

    /// Starts probes for new or changed health checks and stops those of nodes that are gone
    /// or no longer have one.
    pub fn sync(&self, nodes: &[Arc<SfuNode>]) {
        let Ok(mut tasks) = self.tasks.lock() else {
            return;
        };
        let mut wanted: HashMap<NodeKey, ProbeTarget> = HashMap::new();
        for node in nodes {
            if let (Some(key), Some(check)) =
                (NodeKey::of(node), crate::health::effective_check(node))
            {
                wanted.insert(key, (check, node.spec.kind));
            }
        }
        tasks.retain(|key, (check, handle)| {
            let keep = wanted.get(key) == Some(check);
            if !keep {
                handle.abort();
                if let Ok(mut records) = self.records.lock() {
                    records.remove(key);
                }
            }
            keep
        });
        for (key, (check, kind)) in wanted {
            if tasks.contains_key(&key) {
                continue;
            }
            let handle = tokio::spawn(probe_loop(
                self.client.clone(),
                key.clone(),
                check.clone(),
                kind,
                self.records.clone(),
            ));
            tasks.insert(key, ((check, kind), handle));
        }
    }

    /// What has been seen of one node's probes.
    pub fn record(&self, key: &NodeKey) -> Option<ProbeRecord> {
        self.records.lock().ok()?.get(key).cloned()
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        if let Ok(tasks) = self.tasks.lock() {
            for (_, handle) in tasks.values() {
                handle.abort();
            }
        }
    }
}

async fn probe_loop(
    client: reqwest::Client,
    key: NodeKey,
    check: HttpHealthCheck,
    kind: SfuKind,
    records: Records,
) {
    let period = Duration::from_secs(u64::from(check.period_seconds));
    let timeout = Duration::from_secs(u64::from(check.timeout_seconds));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let outcome = match client.get(&check.url).timeout(timeout).send().await {
            Ok(response) if response.status().is_success() => match kind {
                SfuKind::Opaque => Ok(None),
                // Janus's info answer says whether it takes new sessions.
                SfuKind::JanusVideoRoom => match response.bytes().await {
                    Ok(body) => Ok(serde_json::from_slice::<serde_json::Value>(&body)
                        .ok()
                        .and_then(|v| v["accepting-new-sessions"].as_bool())),
                    Err(error) => Err(error.to_string()),
                },
            },
            Ok(response) => Err(format!("HTTP {}", response.status())),
            Err(error) if error.is_timeout() => {
                Err(format!("no answer within {}s", timeout.as_secs()))
            }
            Err(error) if error.is_connect() => Err("connection failed".to_owned()),
            Err(error) => Err(error.to_string()),
        };
        let Ok(mut records) = records.lock() else {
            return;
        };
        let record = records.entry(key.clone()).or_default();
        match outcome {
            Ok(accepting) => {
                record.successes += 1;
                record.consecutive_failures = 0;
                record.last_error = None;
                record.accepting_new_sessions = accepting;
            }
            Err(error) => {
                tracing::debug!(namespace = %key.namespace, node = %key.name, %error, "health check failed");
                record.consecutive_failures = record.consecutive_failures.saturating_add(1);
                record.last_error = Some(error);
            }
        }
    }
}
