//! `switchboard-operator`: places Rooms on SfuNodes and keeps SfuNode health.
//!
//! Layout, from the outside in:
//! - [`run`] wires everything: watches (reflectors) for Rooms and SfuNodes that always run, so
//!   a standby replica is warm; the HTTP endpoint; leader election; and, while leading, the
//!   three loops below. On [`shutdown_signal`] it stops the loops and releases the Lease.
//! - [`placer`]: the one writer of placements; it applies what [`plan::placement`] decides.
//! - [`nodes`]: node health, `allocated`, the drain finalizer, and waking the placer; it applies
//!   what [`plan::node`] decides.
//! - [`empty_expiry`]: deleting rooms that stayed empty past `emptyTimeoutSeconds`.
//! - [`turn_rotation`]: TURN shared-secret rotation, when `--turn-secret-name` is set.
//!
//! Pure parts (no client, no clock): [`plan`], [`keys`], [`ledger`], [`health`], [`views`], and
//! the placement crate itself.

pub mod args;
pub mod empty_expiry;
pub mod events;
pub mod health;
pub mod keys;
pub mod ledger;
pub mod metrics;
pub mod nodes;
pub mod placer;
pub mod plan;
pub mod probe;
pub mod queue;
pub mod sfu;
pub mod telemetry;
pub mod turn_rotation;
pub mod views;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use switchboard_crds::{Room, SfuNode};
use tokio::sync::{Notify, watch};
use tokio::task::{JoinHandle, JoinSet};

use crate::args::Args;
use crate::events::EventSink;
use crate::keys::RoomKey;
use crate::metrics::{HttpState, Metrics};
use crate::placer::{Placer, PlacerConfig, waiting_rooms};
use crate::probe::Prober;
use crate::queue::WorkQueue;

/// Why the operator stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot connect to Kubernetes: {0}")]
    Client(#[source] kube::Error),
    #[error(
        "cannot connect to Kubernetes: the kubeconfig's client certificate is an X.509 version 1 \
         certificate, and the operator's TLS library (rustls) accepts only version 3 (kubectl, \
         on Go's TLS, accepts both). Issue the client certificate again as version 3 by signing \
         it with extensions, for example `openssl x509 -req -in client.csr -CA ca.crt -CAkey \
         ca.key -days 365 -out client.crt -extfile <(printf \
         'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth')`, \
         or use a token (in a cluster, the pod's ServiceAccount) instead of a client certificate"
    )]
    ClientCertificateV1(#[source] kube::Error),
    #[error("cannot install the TLS provider for health checks")]
    TlsProvider,
    #[error(transparent)]
    Probe(#[from] probe::ProbeError),
    #[error("leader election: {0}")]
    Lease(#[from] kube_lease_manager::LeaseManagerError),
    #[error("metrics endpoint on {addr}: {source}")]
    Http {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Turn(#[from] turn_rotation::TurnError),
    #[error("a background task ended unexpectedly: {0}")]
    TaskEnded(&'static str),
    #[error("cannot listen for SIGTERM: {0}")]
    Signal(#[source] std::io::Error),
}

/// How often each SFU's own load is read into `status.reportedLoad`: often enough for a
/// dashboard, rare enough that the admin API requests cost the SFU nothing noticeable.
const SFU_LOAD_PERIOD: Duration = Duration::from_secs(5);

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The watched state and the handles shared by the loops.
#[derive(Clone)]
struct Shared {
    client: Client,
    rooms: Store<Room>,
    nodes: Store<SfuNode>,
    queue: WorkQueue,
    metrics: Arc<Metrics>,
    events: EventSink,
    node_wake: Arc<Notify>,
}

/// How long a stopping operator waits for the apiserver to accept the Lease's release. The
/// kubelet's grace period (30 s by default) is the outer bound; this leaves most of it unused.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

/// Resolves on SIGTERM (what the kubelet sends to stop a pod) or Ctrl-C.
///
/// As PID 1 in a distroless image the operator has no init to act for it: without a handler
/// the kernel ignores TERM for PID 1, the pod waits out its whole grace period, and the Lease
/// stays held until it expires, so the standby replica cannot take over until then.
pub fn shutdown_signal() -> Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).map_err(Error::Signal)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(Error::Signal)?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!(signal = "SIGTERM", "stopping"),
            _ = interrupt.recv() => tracing::info!(signal = "SIGINT", "stopping"),
        }
    })
}

/// Runs the operator until `shutdown` resolves or a fatal error. On shutdown the loops that
/// write (placer, node loop, lifetime, TURN rotation) stop first, then the Lease is released,
/// so the other replica can lead at once and never overlaps with this one.
/// A Kubernetes client that cannot be built, with a specific message where the cause is one
/// users meet and cannot read from the TLS library's words: an X.509 v1 client certificate
/// surfaces as "invalid private key: invalid peer certificate: UnsupportedCertVersion".
fn client_error(error: kube::Error) -> Error {
    let mut chain = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        chain.push_str(&cause.to_string());
        source = cause.source();
    }
    if chain.contains("UnsupportedCertVersion") {
        Error::ClientCertificateV1(error)
    } else {
        Error::Client(error)
    }
}

pub async fn run(args: Args, shutdown: impl Future<Output = ()>) -> Result<()> {
    tokio::pin!(shutdown);
    // reqwest (health checks) uses rustls without a built-in provider; use ring, as kube does.
    if rustls::crypto::CryptoProvider::get_default().is_none()
        && rustls::crypto::ring::default_provider()
            .install_default()
            .is_err()
        && rustls::crypto::CryptoProvider::get_default().is_none()
    {
        return Err(Error::TlsProvider);
    }
    // Bad rotation options stop the operator before it does anything.
    let turn_config = turn_rotation::TurnConfig::from_args(&args)?;
    let client = Client::try_default().await.map_err(client_error)?;
    let metrics = Arc::new(Metrics::new());
    let http_state = Arc::new(HttpState {
        metrics: metrics.clone(),
        ready: false.into(),
    });
    let identity = args
        .leader
        .identity
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| format!("switchboard-operator-{}", std::process::id()));

    let (room_api, node_api): (Api<Room>, Api<SfuNode>) = if args.scope.all_namespaces {
        (Api::all(client.clone()), Api::all(client.clone()))
    } else {
        (
            Api::namespaced(client.clone(), &args.scope.namespace),
            Api::namespaced(client.clone(), &args.scope.namespace),
        )
    };
    let (rooms, room_writer) = reflector::store();
    let (nodes, node_writer) = reflector::store();
    let shared = Shared {
        client: client.clone(),
        rooms: rooms.clone(),
        nodes: nodes.clone(),
        queue: WorkQueue::default(),
        metrics: metrics.clone(),
        events: EventSink::spawn(client.clone(), Some(identity.clone())),
        node_wake: Arc::new(Notify::new()),
    };

    let mut background = JoinSet::new();
    {
        let shared = shared.clone();
        let stream =
            reflector::reflector(room_writer, watcher(room_api, watcher::Config::default()))
                .default_backoff()
                .touched_objects();
        background.spawn(async move {
            futures::pin_mut!(stream);
            while let Some(event) = stream.next().await {
                match event {
                    Ok(room) => {
                        if let Some(key) = RoomKey::of(&room) {
                            shared.queue.push(key);
                        }
                    }
                    Err(error) => tracing::warn!(%error, "room watch error"),
                }
            }
            "room watch"
        });
    }
    {
        let shared = shared.clone();
        // Any node event wakes the node loop at once, instead of at its next tick.
        let stream =
            reflector::reflector(node_writer, watcher(node_api, watcher::Config::default()))
                .default_backoff();
        background.spawn(async move {
            futures::pin_mut!(stream);
            while let Some(event) = stream.next().await {
                match event {
                    Ok(_) => shared.node_wake.notify_one(),
                    Err(error) => tracing::warn!(%error, "node watch error"),
                }
            }
            "node watch"
        });
    }
    {
        let http_state = http_state.clone();
        let addr = args.http.listen;
        background.spawn(async move {
            if let Err(source) = metrics::serve(addr, http_state).await {
                tracing::error!(%addr, error = %source, "metrics endpoint failed");
            }
            "metrics endpoint"
        });
    }
    let (leading_tx, mut leading) = watch::channel(!args.leader.leader_election);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut lease_task = None;
    if args.leader.leader_election {
        let lease_namespace = args
            .leader
            .lease_namespace
            .clone()
            .unwrap_or_else(|| args.scope.namespace.clone());
        let duration = args.leader.lease_duration_seconds;
        let manager =
            kube_lease_manager::LeaseManagerBuilder::new(client.clone(), &args.leader.lease_name)
                .with_namespace(&lease_namespace)
                .with_identity(&identity)
                .with_duration(duration)
                .with_grace((duration / 3).max(1))
                .build()
                .await?;
        let leases: Api<Lease> = Api::namespaced(client.clone(), &lease_namespace);
        lease_task = Some(tokio::spawn(elect(
            manager,
            leases,
            args.leader.lease_name.clone(),
            leading_tx,
            stop_rx,
        )));
    }

    // Wait for the first full list of both kinds in one place only: a store's readiness is a
    // one-shot signal that wakes a single waiter.
    let synced = async {
        let _ = rooms.wait_until_ready().await;
        let _ = nodes.wait_until_ready().await;
    };
    tokio::select! {
        () = synced => {}
        () = &mut shutdown => {
            stop(None, background, lease_task.map(|t| (stop_tx, t)), &metrics).await;
            return Ok(());
        }
    }
    http_state.ready.store(true, Ordering::Relaxed);
    tracing::info!("watches synced");
    let prober = Arc::new(Prober::new()?);
    let http = reqwest::Client::builder()
        // An SFU's admin API must not redirect provisioning somewhere else.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(probe::ProbeError::Client)?;
    let placer_config = PlacerConfig {
        strategy: args.placement.strategy,
        failover_grace: args.placement.failover_grace,
        reservation_ttl: args.placement.reservation_ttl,
        batch_size: usize::try_from(args.placement.batch_size).unwrap_or(256),
    };

    let mut reconcilers: Option<JoinSet<&'static str>> = None;
    loop {
        let is_leader = *leading.borrow_and_update();
        match (is_leader, reconcilers.is_some()) {
            (true, false) => {
                tracing::info!(%identity, "leading: reconciling");
                metrics.is_leader.set(1);
                reconcilers = Some(start_reconcilers(
                    &shared,
                    &args,
                    &placer_config,
                    prober.clone(),
                    http.clone(),
                    turn_config.as_ref(),
                ));
            }
            (false, true) => {
                tracing::warn!(%identity, "lost leadership: standing by");
                metrics.is_leader.set(0);
                if let Some(mut set) = reconcilers.take() {
                    set.abort_all();
                }
            }
            _ => {}
        }
        tokio::select! {
            () = &mut shutdown => {
                stop(reconcilers.take(), background, lease_task.map(|t| (stop_tx, t)), &metrics).await;
                return Ok(());
            }
            changed = leading.changed() => {
                if changed.is_err() {
                    return Err(Error::TaskEnded("leader election"));
                }
            }
            Some(ended) = background.join_next() => {
                return Err(Error::TaskEnded(ended.unwrap_or("background task")));
            }
            Some(ended) = async { match reconcilers.as_mut() { Some(set) => set.join_next().await, None => std::future::pending().await } } => {
                return Err(Error::TaskEnded(ended.unwrap_or("reconciler")));
            }
        }
    }
}

/// Stops the writers, then everything else, then releases the Lease (if leader election is on)
/// and waits for the release to reach the apiserver, at most [`RELEASE_TIMEOUT`].
async fn stop(
    reconcilers: Option<JoinSet<&'static str>>,
    mut background: JoinSet<&'static str>,
    lease: Option<(
        watch::Sender<bool>,
        JoinHandle<kube_lease_manager::Result<()>>,
    )>,
    metrics: &Metrics,
) {
    if let Some(mut set) = reconcilers {
        set.shutdown().await;
    }
    metrics.is_leader.set(0);
    background.shutdown().await;
    let Some((stop, task)) = lease else {
        tracing::info!("stopped");
        return;
    };
    let _ = stop.send(true);
    match tokio::time::timeout(RELEASE_TIMEOUT, task).await {
        Ok(Ok(Ok(()))) => tracing::info!("stopped; lease released"),
        Ok(Ok(Err(error))) => {
            tracing::warn!(%error, "stopped; releasing the lease failed, it expires instead")
        }
        Ok(Err(error)) => {
            tracing::warn!(%error, "stopped; the lease task failed, the lease expires instead")
        }
        Err(_) => tracing::warn!(
            timeout_seconds = RELEASE_TIMEOUT.as_secs(),
            "stopped; the lease release did not finish in time, it expires instead"
        ),
    }
}

/// How often a standby replica looks for a released Lease.
const RELEASED_LEASE_POLL: Duration = Duration::from_secs(1);

/// Leader election: sends whether this replica leads to `leading` until `stop` turns true, then
/// releases the Lease if it holds it.
///
/// kube-lease-manager's standby sleeps until the Lease it last read would expire, so on its own
/// it would notice a released Lease only that late: a clean stop of the leader would cost as
/// much as a crash. So while standing by this reads the Lease every [`RELEASED_LEASE_POLL`] and,
/// once it has no holder, has the manager re-read it (its `release` re-reads, and writes only a
/// Lease that is ours or expired) and try to take it at once.
async fn elect(
    manager: kube_lease_manager::LeaseManager,
    leases: Api<Lease>,
    name: String,
    leading: watch::Sender<bool>,
    mut stop: watch::Receiver<bool>,
) -> kube_lease_manager::Result<()> {
    let mut leader = false;
    loop {
        let released = async {
            if leader {
                return std::future::pending().await;
            }
            loop {
                tokio::time::sleep(RELEASED_LEASE_POLL).await;
                match leases.get(&name).await {
                    Ok(lease)
                        if lease
                            .spec
                            .as_ref()
                            .and_then(|s| s.holder_identity.as_ref())
                            .is_none() =>
                    {
                        return;
                    }
                    Ok(_) => {}
                    Err(error) => tracing::debug!(%error, lease = %name, "cannot read the lease"),
                }
            }
        };
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            changed = manager.changed() => match changed {
                Ok(now) => {
                    leader = now;
                    if leading.send(now).is_err() {
                        break;
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, lease = %name, "leader election: retrying");
                    tokio::time::sleep(RELEASED_LEASE_POLL).await;
                }
            },
            () = released => {
                tracing::info!(lease = %name, "the lease was released: taking it");
                if let Err(error) = manager.release().await {
                    tracing::debug!(%error, lease = %name, "cannot re-read the lease");
                }
            }
        }
    }
    manager.release().await
}

fn start_reconcilers(
    shared: &Shared,
    args: &Args,
    placer_config: &PlacerConfig,
    prober: Arc<Prober>,
    http: reqwest::Client,
    turn_config: Option<&turn_rotation::TurnConfig>,
) -> JoinSet<&'static str> {
    let mut set = JoinSet::new();
    let placer = Placer::new(
        shared.client.clone(),
        http.clone(),
        shared.rooms.clone(),
        shared.nodes.clone(),
        shared.queue.clone(),
        shared.metrics.clone(),
        shared.events.clone(),
        placer_config.clone(),
    );
    set.spawn(async move {
        placer.run().await;
        "placer"
    });
    let load_http = http.clone();
    let node_loop = nodes::NodeLoop {
        client: shared.client.clone(),
        rooms: shared.rooms.clone(),
        nodes: shared.nodes.clone(),
        queue: shared.queue.clone(),
        metrics: shared.metrics.clone(),
        events: shared.events.clone(),
        prober,
        http,
        wake: shared.node_wake.clone(),
        interval: args.placement.health_interval,
        failover_grace: args.placement.failover_grace,
    };
    set.spawn(async move {
        node_loop.run().await;
        "node loop"
    });
    let (client, nodes, load_http) = (shared.client.clone(), shared.nodes.clone(), load_http);
    set.spawn(async move {
        sfu::load::run(client, load_http, nodes, SFU_LOAD_PERIOD).await;
        "SFU load reader"
    });
    let (client, rooms, events) = (
        shared.client.clone(),
        shared.rooms.clone(),
        shared.events.clone(),
    );
    set.spawn(async move {
        empty_expiry::run(client, rooms, events, Duration::from_secs(1)).await;
        "empty-room expiry"
    });
    if let Some(config) = turn_config {
        let rotator = turn_rotation::TurnRotator::new(
            shared.client.clone(),
            config.clone(),
            shared.metrics.clone(),
            shared.events.clone(),
        );
        set.spawn(async move {
            match rotator {
                Ok(rotator) => rotator.run().await,
                Err(error) => tracing::error!(%error, "cannot start TURN secret rotation"),
            }
            "TURN secret rotation"
        });
    }
    // Rooms deleted while we were not leading may have freed capacity.
    shared.queue.push_many(waiting_rooms(&shared.rooms, None));
    set
}
