//! Wiring for `dev`: the whole system in one process, with no Kubernetes and no Redis. Rooms
//! are placed on a fixed list of SFU nodes ([`crate::rooms::FixedPlacement`]), room state is
//! in memory, join tokens are signed with a key generated at start and minted by
//! `/dev/token`, and the demo page is served from `/`. Everything else is `serve`'s.
//! With `--janus` it also starts a local Janus and places rooms on it ([`janus`]).

pub mod janus;

use std::sync::Arc;
use std::time::Duration;

use crate::auth::Hs256Signer;
use crate::config::{AuthArgs, DevArgs, KubeArgs, ServeArgs, StateArgs};
use crate::rooms::{FixedError, FixedNode, FixedPlacement};
use crate::serve::{DevWiring, ServeError};

/// Why dev mode could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    #[error(transparent)]
    Nodes(#[from] FixedError),
    #[error("cannot make the dev signing key: {0}")]
    Key(String),
    #[error(transparent)]
    Serve(#[from] ServeError),
    #[error("--janus: {0}")]
    Janus(#[from] janus::LocalJanusError),
    #[error("--janus: {0}")]
    JanusExited(String),
}

/// 32 random bytes as hex: a secret that fits anywhere text does (the signing key, Janus's
/// `.jcfg` strings). Fails rather than fall back: a guessable secret is worse than none.
fn random_secret() -> Result<String, String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| e.to_string())?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Runs dev mode until Ctrl-C or SIGTERM.
pub async fn run(args: DevArgs) -> Result<(), DevError> {
    let mut nodes = Vec::new();
    for flag in &args.sfu {
        nodes.push(FixedNode::from_flag(flag)?);
    }
    for path in &args.sfu_files {
        nodes.extend(FixedNode::from_yaml_file(path)?);
    }
    let mut local_janus = None;
    if args.janus.janus {
        let running = janus::RunningJanus::start(&args.janus).await?;
        nodes.insert(0, running.node());
        local_janus = Some(running);
    }
    let placement = FixedPlacement::new(nodes, args.limits.default_max_participants)?;
    for node in placement.nodes() {
        tracing::info!(node = %node.name, url = %node.url, region = %node.region, "SFU node");
    }
    let secret = random_secret().map_err(DevError::Key)?;
    let signer = Hs256Signer::new(Some("dev"), secret.as_bytes())
        .map_err(|e| DevError::Key(e.to_string()))?;
    let serve = ServeArgs {
        listen: args.listen,
        auth: AuthArgs {
            hs256: vec![format!("dev={secret}")],
            public_keys: Vec::new(),
            audience: None,
            issuer: None,
            max_lifetime: Duration::from_secs(24 * 3600),
            leeway: Duration::from_secs(30),
        },
        turn: args.turn,
        sfu_tokens: args.sfu_tokens,
        limits: args.limits,
        kube: KubeArgs {
            namespace: None,
            auto_create: false,
            auto_create_max_participants: 50,
            auto_create_empty_timeout: Duration::from_secs(300),
            placement_wait: Duration::from_secs(5),
        },
        state: StateArgs {
            redis_url: None,
            redis_cluster: false,
            participant_ttl: args.participant_ttl,
            mailbox_len: crate::store::DEFAULT_MAILBOX_LEN,
            pod_name: Some("dev".to_owned()),
        },
        admin: crate::config::AdminArgs {
            admin_addr: None,
            admin_audience: crate::auth::DEFAULT_ADMIN_AUDIENCE.to_owned(),
        },
        webhooks: crate::config::WebhookArgs {
            webhook_urls: Vec::new(),
            webhook_key: None,
            webhook_queue: 4096,
            webhook_retry_for: Duration::from_secs(60),
            webhook_timeout: Duration::from_secs(5),
        },
        log: args.log,
        demo: true,
    };
    let wiring = DevWiring {
        rooms: Arc::new(placement),
        signer,
    };
    let serving = crate::serve::run_with(serve, Some(wiring));
    match local_janus {
        None => Ok(serving.await?),
        Some(mut janus) => tokio::select! {
            served = serving => Ok(served?),
            exited = janus.exited() => Err(DevError::JanusExited(exited)),
        },
    }
}
