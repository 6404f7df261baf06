//! The Kubernetes room source: which SFU a room is on, creating Rooms on first join, telling
//! clients when the operator moves their room, and reporting participant counts.
//!
//! Placement comes from the operator through `Room.status`; signaling only reads it (from a
//! reflector, so a join costs no API call) and, with auto-create on, creates the Room.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use kube::Client;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use switchboard_crds::{Room, RoomPhase, RoomSpec, SfuNode};

use super::{ResolveError, RoomInfo, RoomSource};
use crate::hub::Hub;
use crate::ids::{Region, RoomId};
use crate::protocol::{ServerMessage, SfuInfo};

/// Creating Rooms that do not exist yet.
#[derive(Debug, Clone)]
pub struct AutoCreate {
    pub max_participants: u32,
    pub empty_timeout_seconds: u32,
    /// How long a join waits for the operator to place a new room.
    pub placement_wait: Duration,
}

/// Room objects placed by the operator, from a reflector (a join costs no API call).
#[derive(Debug)]
pub struct RoomDirectory {
    api: Api<Room>,
    store: Store<Room>,
    nodes: Store<SfuNode>,
    namespace: String,
    auto_create: Option<AutoCreate>,
    /// Whether the Room and SfuNode watches last succeeded, for `/readyz`.
    rooms_watch: Arc<AtomicBool>,
    nodes_watch: Arc<AtomicBool>,
}

fn sfu_of(room: &Room) -> Option<SfuInfo> {
    let status = room.status.as_ref()?;
    if status.phase != Some(RoomPhase::Placed) {
        return None;
    }
    Some(SfuInfo {
        node: status.sfu_node.clone()?,
        url: status.sfu_url.clone()?,
    })
}

impl RoomDirectory {
    /// Starts watching Rooms in `namespace`; also starts the tasks that tell clients about SFU
    /// moves and report participant counts.
    pub async fn start(
        client: Client,
        namespace: &str,
        auto_create: Option<AutoCreate>,
        hub: Hub,
        room_store: Arc<dyn crate::store::RoomStore>,
    ) -> Arc<Self> {
        let api: Api<Room> = Api::namespaced(client, namespace);
        let (store, writer) = reflector::store();
        let stream = reflector::reflector(writer, watcher(api.clone(), watcher::Config::default()))
            .default_backoff();
        let notify_hub = hub.clone();
        let rooms_watch = Arc::new(AtomicBool::new(false));
        let rooms_ok = rooms_watch.clone();
        tokio::spawn(async move {
            // The SFU each room was last seen on, to spot moves.
            let mut known: HashMap<String, SfuInfo> = HashMap::new();
            futures::pin_mut!(stream);
            while let Some(event) = stream.next().await {
                // Any event, even an empty initial list, shows the watch works.
                let room = match event {
                    Ok(watcher::Event::Apply(room) | watcher::Event::InitApply(room)) => {
                        rooms_ok.store(true, Ordering::Release);
                        room
                    }
                    Ok(_) => {
                        rooms_ok.store(true, Ordering::Release);
                        continue;
                    }
                    Err(_) => {
                        rooms_ok.store(false, Ordering::Release);
                        continue;
                    }
                };
                let (Some(name), Some(sfu)) = (room.metadata.name.clone(), sfu_of(&room)) else {
                    continue;
                };
                let before = known.insert(name.clone(), sfu.clone());
                if before.is_some_and(|b| b != sfu)
                    && let Some(id) = RoomId::from_kube_name(&name)
                {
                    tracing::info!(room = %id.as_str(), node = %sfu.node, "room moved; telling its clients");
                    notify_hub.broadcast(&id, &ServerMessage::SfuReassigned { sfu });
                }
            }
        });
        let (nodes, node_writer) = reflector::store();
        let node_api: Api<SfuNode> = Api::namespaced(api.clone().into_client(), namespace);
        let node_stream =
            reflector::reflector(node_writer, watcher(node_api, watcher::Config::default()))
                .default_backoff();
        let nodes_watch = Arc::new(AtomicBool::new(false));
        let nodes_ok = nodes_watch.clone();
        tokio::spawn(async move {
            futures::pin_mut!(node_stream);
            while let Some(event) = node_stream.next().await {
                nodes_ok.store(event.is_ok(), Ordering::Release);
            }
        });
        let directory = Arc::new(RoomDirectory {
            api,
            store,
            nodes,
            namespace: namespace.to_owned(),
            auto_create,
            rooms_watch,
            nodes_watch,
        });
        tokio::spawn(report_participants(directory.clone(), hub, room_store));
        directory
    }

    /// What a join needs from a Room: its limit, its SFU and that SFU's TURN URLs.
    fn info(&self, room: &Room, sfu: Option<SfuInfo>) -> RoomInfo {
        let turn_urls = sfu
            .as_ref()
            .and_then(|sfu| {
                self.nodes
                    .get(&ObjectRef::new(&sfu.node).within(&self.namespace))
            })
            .and_then(|node| node.spec.turn.as_ref().map(|t| t.urls.clone()))
            .unwrap_or_default();
        RoomInfo {
            max_participants: room.spec.max_participants,
            sfu,
            turn_urls,
        }
    }

    /// Waits until the first list of Rooms has arrived (for readiness).
    pub async fn wait_ready(&self) {
        let _ = self.store.wait_until_ready().await;
    }

    /// Whether both watches are working now (the last attempt of each succeeded).
    pub fn is_watching(&self) -> bool {
        self.rooms_watch.load(Ordering::Acquire) && self.nodes_watch.load(Ordering::Acquire)
    }

    fn lookup(&self, room: &RoomId) -> Option<Arc<Room>> {
        self.store
            .get(&ObjectRef::new(&room.kube_name()).within(&self.namespace))
    }

    /// The room's limit and SFU. Creates the Room when allowed, and waits a bounded time for
    /// the operator to place it.
    async fn resolve_room(
        &self,
        room: &RoomId,
        region: Option<&Region>,
    ) -> Result<RoomInfo, ResolveError> {
        let name = room.kube_name();
        let existing = match self.lookup(room) {
            Some(found) => Some(found),
            // The watch may lag a room created a moment ago: ask the API before refusing.
            None => self.api.get_opt(&name).await.ok().flatten().map(Arc::new),
        };
        let Some(auto) = &self.auto_create else {
            let found = existing.ok_or_else(|| ResolveError::NotFound(room.as_str().to_owned()))?;
            return Ok(self.info(&found, sfu_of(&found)));
        };
        if let Some(found) = &existing
            && let Some(sfu) = sfu_of(found)
        {
            return Ok(self.info(found, Some(sfu)));
        }
        if existing.is_none() {
            let new_room = Room {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    labels: Some(
                        [(
                            "app.kubernetes.io/created-by".to_owned(),
                            "switchboard-signaling".to_owned(),
                        )]
                        .into(),
                    ),
                    ..ObjectMeta::default()
                },
                spec: RoomSpec {
                    max_participants: auto.max_participants,
                    // The first joiner's region: calls land near their users.
                    region: region.map(|r| r.as_str().to_owned()),
                    region_policy: None,
                    sfu_selector: None,
                    empty_timeout_seconds: Some(auto.empty_timeout_seconds),
                },
                status: None,
            };
            match self.api.create(&PostParams::default(), &new_room).await {
                Ok(_) => tracing::info!(room = %room.as_str(), "created room"),
                Err(kube::Error::Api(status)) if status.code == 409 => {}
                Err(source) => {
                    return Err(ResolveError::Create {
                        room: room.as_str().to_owned(),
                        source,
                    });
                }
            }
        }
        let deadline = tokio::time::Instant::now() + auto.placement_wait;
        loop {
            if let Some(found) = self.lookup(room)
                && let Some(sfu) = sfu_of(&found)
            {
                return Ok(self.info(&found, Some(sfu)));
            }
            if tokio::time::Instant::now() > deadline {
                return Err(ResolveError::PlacementTimeout(room.as_str().to_owned()));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl RoomSource for RoomDirectory {
    fn resolve<'a>(
        &'a self,
        room: &'a RoomId,
        region: Option<&'a Region>,
    ) -> BoxFuture<'a, Result<RoomInfo, ResolveError>> {
        Box::pin(self.resolve_room(room, region))
    }

    fn is_healthy(&self) -> bool {
        self.is_watching()
    }
}

/// Copies the participant counts of the rooms this process serves into
/// `Room.status.participants` once a second, only for rooms whose count changed, for the
/// operator's empty-room timeout. The counts are the room's total in the shared state, so
/// pods serving the same room write the same number.
async fn report_participants(
    directory: Arc<RoomDirectory>,
    hub: Hub,
    store: Arc<dyn crate::store::RoomStore>,
) {
    let mut reported: HashMap<RoomId, usize> = HashMap::new();
    // This pod's own count per room at the last tick: a room is recounted in the shared
    // state when it changes here, and every room every FULL_RECOUNT ticks (for joins and
    // leaves on other pods), so an idle pod does not ask Redis about every room each second.
    let mut local_before: HashMap<RoomId, usize> = HashMap::new();
    const FULL_RECOUNT: u64 = 10;
    let mut ticks = 0u64;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        ticks += 1;
        let local: HashMap<RoomId, usize> = hub.local_counts().into_iter().collect();
        let full = ticks.is_multiple_of(FULL_RECOUNT);
        let mut due: Vec<RoomId> = local
            .iter()
            .filter(|(room, count)| full || local_before.get(*room) != Some(*count))
            .map(|(room, _)| room.clone())
            .collect();
        due.extend(
            local_before
                .keys()
                .chain(reported.keys())
                .filter(|room| {
                    !local.contains_key(*room) && (full || local_before.contains_key(*room))
                })
                .cloned(),
        );
        due.sort();
        due.dedup();
        local_before = local;
        let mut current: HashMap<RoomId, usize> = HashMap::new();
        for room in due {
            match store.count(&room).await {
                Ok(count) => {
                    current.insert(room, count as usize);
                }
                // Not reported this time; a wrong zero would start the empty-room timeout.
                Err(error) => tracing::debug!(%error, "cannot count participants"),
            }
        }
        for (room, count) in &current {
            if reported.get(room) == Some(count) {
                continue;
            }
            if directory.lookup(room).is_none() {
                continue;
            }
            let patch = json!({"status": {"participants": count}});
            match directory
                .api
                .patch_status(
                    &room.kube_name(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
            {
                Ok(_) => {
                    reported.insert(room.clone(), *count);
                }
                Err(error) => {
                    tracing::debug!(room = %room.as_str(), %error, "cannot report participants")
                }
            }
        }
        reported.retain(|_, count| *count > 0);
    }
}
