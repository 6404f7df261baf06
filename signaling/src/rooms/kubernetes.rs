//! The Kubernetes room source: which SFU a room is on, creating Rooms on first join, telling
//! clients when the operator moves their room, and reporting participant counts.
//!
//! Placement comes from the operator through `Room.status`; signaling only reads it (from a
//! reflector, so a join costs no API call) and, with auto-create on, creates the Room.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use switchboard_crds::{Room, RoomPhase, RoomSpec, SfuNode};
use switchboard_sfu::SfuKind;
use switchboard_sfu::janus::{self, JanusCredentials};

use super::{JanusRoom, ResolveError, RoomInfo, RoomSource, SfuRoute};
use crate::hub::Hub;
use crate::ids::{Region, RoomId};
use crate::protocol::ServerMessage;

/// Creating Rooms that do not exist yet.
#[derive(Debug, Clone)]
pub struct AutoCreate {
    pub max_participants: u32,
    pub empty_timeout_seconds: u32,
}

/// How the directory behaves.
#[derive(Debug, Clone)]
pub struct DirectoryOptions {
    /// Create Rooms on first join, when set.
    pub auto_create: Option<AutoCreate>,
    /// How long a join waits for the operator to place (and provision) a room.
    pub placement_wait: Duration,
    /// Lifetime of the SFU tokens in `sfuReassigned`.
    pub sfu_token_ttl: Duration,
}

/// Room objects placed by the operator, from a reflector (a join costs no API call).
#[derive(Debug)]
pub struct RoomDirectory {
    api: Api<Room>,
    store: Store<Room>,
    nodes: Store<SfuNode>,
    /// The SFU credential Secrets, read by name (`get` only: the chart grants nothing more).
    secrets: Api<Secret>,
    /// Credentials read recently, so a burst of joins costs one API call per node.
    credentials: Mutex<HashMap<String, (Instant, JanusCredentials)>>,
    namespace: String,
    options: DirectoryOptions,
    /// Whether the Room and SfuNode watches last succeeded, for `/readyz`.
    rooms_watch: Arc<AtomicBool>,
    nodes_watch: Arc<AtomicBool>,
}

/// How long credentials read from a Secret are reused; a rotated secret is in use after this.
const CREDENTIALS_FRESH_FOR: Duration = Duration::from_secs(10);

/// Where a Room's status says it is, when it is placed: node, URL, generation, and its id on
/// the SFU once provisioned.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Placement {
    node: String,
    url: String,
    generation: u64,
    sfu_room: Option<String>,
}

fn placement_of(room: &Room) -> Option<Placement> {
    let status = room.status.as_ref()?;
    if status.phase != Some(RoomPhase::Placed) {
        return None;
    }
    Some(Placement {
        node: status.sfu_node.clone()?,
        url: status.sfu_url.clone()?,
        generation: u64::from(status.placement_generation),
        sfu_room: status.sfu_room.clone(),
    })
}

/// Why a placed room's SFU cannot be handed out yet.
enum NotReady {
    /// The room is not on Janus yet (no `status.sfuRoom`): wait, like for a placement.
    Provisioning,
    /// The node or its credentials are unusable: the join fails with this.
    Failed(ResolveError),
}

impl RoomDirectory {
    /// Starts watching Rooms and SfuNodes in `namespace`; also starts the tasks that tell
    /// clients about SFU moves and report participant counts.
    pub async fn start(
        client: Client,
        namespace: &str,
        options: DirectoryOptions,
        hub: Hub,
        room_store: Arc<dyn crate::store::RoomStore>,
    ) -> Arc<Self> {
        let api: Api<Room> = Api::namespaced(client.clone(), namespace);
        let (store, writer) = reflector::store();
        let stream = reflector::reflector(writer, watcher(api.clone(), watcher::Config::default()))
            .default_backoff();
        let (nodes, node_writer) = reflector::store();
        let node_api: Api<SfuNode> = Api::namespaced(client.clone(), namespace);
        let node_stream =
            reflector::reflector(node_writer, watcher(node_api, watcher::Config::default()))
                .default_backoff();
        let directory = Arc::new(RoomDirectory {
            api,
            store,
            nodes,
            secrets: Api::namespaced(client, namespace),
            credentials: Mutex::new(HashMap::new()),
            namespace: namespace.to_owned(),
            options,
            rooms_watch: Arc::new(AtomicBool::new(false)),
            nodes_watch: Arc::new(AtomicBool::new(false)),
        });
        tokio::spawn(watch_rooms(
            directory.clone(),
            stream,
            hub.clone(),
            room_store.clone(),
        ));
        let nodes_ok = directory.nodes_watch.clone();
        tokio::spawn(async move {
            futures::pin_mut!(node_stream);
            while let Some(event) = node_stream.next().await {
                nodes_ok.store(event.is_ok(), Ordering::Release);
            }
        });
        tokio::spawn(report_participants(directory.clone(), hub, room_store));
        directory
    }

    /// The node's Janus credentials, from its `spec.admin.credentialsSecret`.
    async fn janus_credentials(&self, node: &SfuNode) -> Result<JanusCredentials, ResolveError> {
        let node_name = node.metadata.name.clone().unwrap_or_default();
        let failed = |message: String| ResolveError::SfuCredentials {
            node: node_name.clone(),
            message,
        };
        let secret_name = node
            .spec
            .admin
            .as_ref()
            .map(|admin| admin.credentials_secret.clone())
            .ok_or_else(|| failed("spec.admin.credentialsSecret is not set".to_owned()))?;
        if let Some((read_at, credentials)) = self
            .credentials
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&secret_name)
            && read_at.elapsed() < CREDENTIALS_FRESH_FOR
        {
            return Ok(credentials.clone());
        }
        let secret = self
            .secrets
            .get(&secret_name)
            .await
            .map_err(|error| failed(format!("cannot read Secret {secret_name}: {error}")))?;
        let data: BTreeMap<String, Vec<u8>> = secret
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(key, value)| (key, value.0))
            .collect();
        let credentials = JanusCredentials::from_secret_data(&data)
            .map_err(|error| failed(format!("Secret {secret_name}: {error}")))?;
        self.credentials
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(secret_name, (Instant::now(), credentials.clone()));
        Ok(credentials)
    }

    /// The route to a placed room's SFU, or why it cannot be given yet.
    async fn route(&self, placement: &Placement) -> Result<SfuRoute, NotReady> {
        let node = self
            .nodes
            .get(&ObjectRef::new(&placement.node).within(&self.namespace));
        // A node not seen yet (the watch lags its creation) may be any kind: wait for it
        // rather than hand out a Janus room as Opaque.
        let kind = node.as_ref().ok_or(NotReady::Provisioning)?.spec.kind;
        let mut route = SfuRoute::opaque(
            placement.node.clone(),
            placement.url.clone(),
            placement.generation,
        );
        route.kind = kind.as_str().to_owned();
        match kind {
            SfuKind::Opaque => Ok(route),
            SfuKind::JanusVideoRoom => {
                let node = node.ok_or(NotReady::Provisioning)?;
                let sfu_room = placement.sfu_room.clone().ok_or(NotReady::Provisioning)?;
                let credentials = self
                    .janus_credentials(&node)
                    .await
                    .map_err(NotReady::Failed)?;
                route.janus = Some(JanusRoom {
                    pin: janus::room_pin(&credentials.room_admin_key, &sfu_room),
                    room: sfu_room,
                    token_secret: credentials.token_secret.clone(),
                });
                Ok(route)
            }
        }
    }

    /// What a join needs from a Room: its limit, its SFU and that SFU's TURN URLs.
    fn info(&self, room: &Room, sfu: Option<SfuRoute>) -> RoomInfo {
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

    /// The Room's info when its SFU can be handed out now; `Ok(None)` while it must wait for a
    /// placement or provisioning.
    async fn ready_info(&self, room: &Room) -> Result<Option<RoomInfo>, ResolveError> {
        let Some(placement) = placement_of(room) else {
            return Ok(None);
        };
        match self.route(&placement).await {
            Ok(route) => Ok(Some(self.info(room, Some(route)))),
            Err(NotReady::Provisioning) => Ok(None),
            Err(NotReady::Failed(error)) => Err(error),
        }
    }

    /// Waits until the first lists of Rooms and SfuNodes have arrived (for readiness).
    pub async fn wait_ready(&self) {
        let _ = self.store.wait_until_ready().await;
        let _ = self.nodes.wait_until_ready().await;
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
        // A Room being deleted (its finalizer still pending) takes no one in, and is not
        // created again while it goes.
        if existing
            .as_ref()
            .is_some_and(|found| found.metadata.deletion_timestamp.is_some())
        {
            return Err(ResolveError::NotFound(room.as_str().to_owned()));
        }
        match (&existing, &self.options.auto_create) {
            (None, None) => return Err(ResolveError::NotFound(room.as_str().to_owned())),
            (None, Some(auto)) => self.create(room, &name, region, auto).await?,
            (Some(found), auto) => {
                if let Some(info) = self.ready_info(found).await? {
                    return Ok(info);
                }
                // Without auto-create, a Room nobody has placed yet is joined without an SFU
                // (`sfuReassigned` follows). One with a node chosen waits for it to be ready:
                // a client never gets `joined` for a Janus room that does not exist yet.
                let node_chosen = found
                    .status
                    .as_ref()
                    .is_some_and(|status| status.sfu_node.is_some());
                if auto.is_none() && !node_chosen {
                    return Ok(self.info(found, None));
                }
            }
        }
        let deadline = tokio::time::Instant::now() + self.options.placement_wait;
        loop {
            if let Some(found) = self.lookup(room)
                && let Some(info) = self.ready_info(&found).await?
            {
                return Ok(info);
            }
            if tokio::time::Instant::now() > deadline {
                return Err(ResolveError::PlacementTimeout(room.as_str().to_owned()));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Creates the Room for a first join (a concurrent creation by another pod is fine).
    async fn create(
        &self,
        room: &RoomId,
        name: &str,
        region: Option<&Region>,
        auto: &AutoCreate,
    ) -> Result<(), ResolveError> {
        let new_room = Room {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
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
            Ok(_) => {
                tracing::info!(room = %room.as_str(), "created room");
                Ok(())
            }
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
            Err(source) => Err(ResolveError::Create {
                room: room.as_str().to_owned(),
                source,
            }),
        }
    }

    /// The room's SFU now, for `sfuRefresh`; `None` when it has none ready.
    async fn current_route(&self, room: &RoomId) -> Option<SfuRoute> {
        let found = self.lookup(room)?;
        let placement = placement_of(&found)?;
        self.route(&placement).await.ok()
    }
}

/// Follows the Rooms: keeps the reflector's cache, the watch's health for `/readyz`, tells a
/// room's clients (`sfuReassigned`) when its placement moves to another node or generation,
/// once the new place is ready (provisioned, for Janus), and ends the call of a deleted Room.
///
/// A Room is deleted once its `deletionTimestamp` is set, not only when it is gone: a Room on
/// an SFU carries the operator's finalizer (`switchboard.dev/sfu-room`) and stays until the
/// SFU room is torn down. Every pod sees the deletion and ends the call in the shared state;
/// ending is idempotent, so the first pod does the work (every participant, on every pod, is
/// closed with 4003) and the others find the room empty.
async fn watch_rooms(
    directory: Arc<RoomDirectory>,
    stream: impl futures::Stream<Item = Result<watcher::Event<Room>, watcher::Error>>,
    hub: Hub,
    room_store: Arc<dyn crate::store::RoomStore>,
) {
    // Where each room was last seen ready, to spot moves.
    let mut known: HashMap<String, Placement> = HashMap::new();
    // Rooms being deleted whose call this pod has ended, so the finalizer's updates do not
    // end it again.
    let mut ended: HashSet<String> = HashSet::new();
    futures::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        // Any event, even an empty initial list, shows the watch works.
        let room = match event {
            Ok(watcher::Event::Delete(room)) => {
                directory.rooms_watch.store(true, Ordering::Release);
                if let Some(name) = room.metadata.name.as_deref() {
                    known.remove(name);
                    if !ended.remove(name) {
                        end_call(room_store.as_ref(), name).await;
                    }
                }
                continue;
            }
            Ok(watcher::Event::Apply(room) | watcher::Event::InitApply(room))
                if room.metadata.deletion_timestamp.is_some() =>
            {
                directory.rooms_watch.store(true, Ordering::Release);
                if let Some(name) = room.metadata.name.clone()
                    && !ended.contains(&name)
                    && end_call(room_store.as_ref(), &name).await
                {
                    ended.insert(name);
                }
                continue;
            }
            Ok(watcher::Event::Apply(room) | watcher::Event::InitApply(room)) => {
                directory.rooms_watch.store(true, Ordering::Release);
                room
            }
            Ok(_) => {
                directory.rooms_watch.store(true, Ordering::Release);
                continue;
            }
            Err(_) => {
                directory.rooms_watch.store(false, Ordering::Release);
                continue;
            }
        };
        let (Some(name), Some(placement)) = (room.metadata.name.clone(), placement_of(&room))
        else {
            continue;
        };
        if known.get(&name) == Some(&placement) {
            continue;
        }
        let route = match directory.route(&placement).await {
            Ok(route) => route,
            // Told when provisioning is done (the next status change).
            Err(NotReady::Provisioning) => continue,
            Err(NotReady::Failed(error)) => {
                tracing::warn!(%error, room = %name, "cannot tell clients where their room moved");
                continue;
            }
        };
        let moved = known.insert(name.clone(), placement).is_some();
        if moved && let Some(id) = RoomId::from_kube_name(&name) {
            tracing::info!(room = %id.as_str(), node = %route.node, generation = route.generation, "room moved; telling its clients");
            let now = unix_now();
            let sfu = route.for_participant(now, directory.options.sfu_token_ttl);
            hub.broadcast(&id, &ServerMessage::SfuReassigned { sfu });
        }
    }
}

/// Ends the call of the deleted Room `name` in the shared state; `false` if the store failed
/// (the next event on the Room tries again; participants it missed expire within a TTL).
async fn end_call(store: &dyn crate::store::RoomStore, name: &str) -> bool {
    let Some(room) = RoomId::from_kube_name(name) else {
        return true;
    };
    match store.end_room(&room).await {
        Ok(removed) => {
            if removed > 0 {
                tracing::info!(room = %room.as_str(), removed, "Room deleted; call ended");
            }
            true
        }
        Err(error) => {
            tracing::warn!(%error, room = %room.as_str(), "Room deleted, but its call cannot be ended now");
            false
        }
    }
}

/// Now, in Unix seconds.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl RoomSource for RoomDirectory {
    fn resolve<'a>(
        &'a self,
        room: &'a RoomId,
        region: Option<&'a Region>,
    ) -> BoxFuture<'a, Result<RoomInfo, ResolveError>> {
        Box::pin(self.resolve_room(room, region))
    }

    fn current_sfu<'a>(&'a self, room: &'a RoomId) -> BoxFuture<'a, Option<SfuRoute>> {
        Box::pin(self.current_route(room))
    }

    fn is_healthy(&self) -> bool {
        self.is_watching()
    }

    fn delete_room<'a>(&'a self, room: &'a RoomId) -> BoxFuture<'a, Result<bool, ResolveError>> {
        Box::pin(async move {
            match self
                .api
                .delete(&room.kube_name(), &kube::api::DeleteParams::default())
                .await
            {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
                Err(source) => Err(ResolveError::Delete {
                    room: room.as_str().to_owned(),
                    source,
                }),
            }
        })
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
