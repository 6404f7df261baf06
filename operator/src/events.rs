//! Kubernetes Events, published off the hot path: placement hands them to a bounded channel
//! and a single task publishes them, so a burst of placements is never slowed by Event writes.
//! When the channel is full an Event is dropped (and logged); the Room's status and conditions
//! still say what happened.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tokio::sync::mpsc;

const CAPACITY: usize = 4096;

#[derive(Clone)]
pub struct EventSink {
    tx: mpsc::Sender<(ObjectReference, Event)>,
}

impl EventSink {
    /// Starts the publishing task.
    pub fn spawn(client: Client, instance: Option<String>) -> Self {
        let (tx, mut rx) = mpsc::channel::<(ObjectReference, Event)>(CAPACITY);
        let recorder = Recorder::new(
            client,
            Reporter {
                controller: "switchboard-operator".into(),
                instance,
            },
        );
        tokio::spawn(async move {
            while let Some((reference, event)) = rx.recv().await {
                if let Err(error) = recorder.publish(&event, &reference).await {
                    tracing::warn!(%error, reason = %event.reason, "cannot publish event");
                }
            }
        });
        EventSink { tx }
    }

    /// Queues an Event about `reference`. `reason` is PascalCase.
    pub fn emit(
        &self,
        reference: ObjectReference,
        warning: bool,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let event = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.to_owned(),
            note: Some(note),
            action: action.to_owned(),
            secondary: None,
        };
        if self.tx.try_send((reference, event)).is_err() {
            tracing::debug!(%reason, "event channel full; event dropped");
        }
    }
}
