//! Where a room's limit and SFU come from, behind one interface, [`RoomSource`]:
//!
//! - [`kubernetes::RoomDirectory`]: Room objects placed by the operator (`serve --namespace`);
//! - [`fixed::FixedPlacement`]: a fixed list of SFU nodes placed in this process (dev mode);
//! - [`Standalone`]: no placement at all; rooms exist while people are in them and `joined`
//!   carries no SFU.
//!
//! A source answers one question for a join, [`RoomSource::resolve`], says whether it is
//! working, for `/readyz`, and deletes a room object for the server API. It never touches
//! connections; the Kubernetes source ends the call of a deleted Room through the store.

pub mod fixed;
pub mod kubernetes;

use futures::future::BoxFuture;

use crate::ids::{Region, RoomId};
use crate::protocol::SfuInfo;

pub use self::fixed::{FixedError, FixedJanus, FixedNode, FixedPlacement};
pub use self::kubernetes::{AutoCreate, DirectoryOptions, RoomDirectory};

/// Why a room cannot be joined.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("room {0} does not exist")]
    NotFound(String),
    #[error("room {0} was not placed on an SFU in time")]
    PlacementTimeout(String),
    #[error("cannot create room {room}: {source}")]
    Create {
        room: String,
        #[source]
        source: kube::Error,
    },
    /// The room's node is a kind that needs credentials, and they cannot be read.
    #[error("SFU node {node}: {message}")]
    SfuCredentials { node: String, message: String },
    /// Dev mode could not create the room on its SFU.
    #[error("cannot create the room on SFU node {node}: {message}")]
    Provision { node: String, message: String },
    /// No node of a fixed list has room.
    #[error("no SFU node can take the room: {0}")]
    NoFit(String),
    /// The Room object could not be deleted (server API).
    #[error("cannot delete room {room}: {source}")]
    Delete {
        room: String,
        #[source]
        source: kube::Error,
    },
}

/// The room's SFU as its source knows it. [`SfuRoute::for_participant`] turns it into the
/// `sfu` object one participant is sent, with a token minted for them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SfuRoute {
    pub node: String,
    pub url: String,
    /// The node's `spec.kind`, as sent on the wire.
    pub kind: String,
    /// `Room.status.placementGeneration` (0 where nothing moves rooms, as in dev mode).
    pub generation: u64,
    /// What a participant needs to enter the room on Janus, for `JanusVideoRoom` nodes.
    pub janus: Option<JanusRoom>,
}

/// A room on a Janus VideoRoom node.
#[derive(Clone, PartialEq, Eq)]
pub struct JanusRoom {
    /// The room's id on Janus (`Room.status.sfuRoom`).
    pub room: String,
    /// The room's pin, derived from the node's room admin key.
    pub pin: String,
    /// The node's `token_auth_secret`, to mint participants' tokens with.
    pub token_secret: Vec<u8>,
}

impl std::fmt::Debug for JanusRoom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the pin or the secret: this ends up in logs.
        f.debug_struct("JanusRoom")
            .field("room", &self.room)
            .finish_non_exhaustive()
    }
}

impl SfuRoute {
    /// An `Opaque` node: its URL is a label, there is nothing to mint.
    pub fn opaque(node: String, url: String, generation: u64) -> Self {
        SfuRoute {
            node,
            url,
            kind: switchboard_sfu::SfuKind::Opaque.as_str().to_owned(),
            generation,
            janus: None,
        }
    }

    /// Whether the SFU takes tokens that must be refreshed (`sfuRefresh`).
    pub fn has_token(&self) -> bool {
        self.janus.is_some()
    }

    /// The `sfu` object for one participant: for Janus, with a token that expires `ttl` after
    /// `now_unix` (Unix seconds).
    pub fn for_participant(&self, now_unix: u64, ttl: std::time::Duration) -> SfuInfo {
        let mut info = SfuInfo {
            node: self.node.clone(),
            url: self.url.clone(),
            kind: self.kind.clone(),
            generation: self.generation,
            room: None,
            pin: None,
            token: None,
            token_expires_at: None,
        };
        if let Some(janus) = &self.janus {
            let expires_at = now_unix.saturating_add(ttl.as_secs());
            info.room = Some(janus.room.clone());
            info.pin = Some(janus.pin.clone());
            info.token = Some(switchboard_sfu::janus::mint_token(
                &janus.token_secret,
                expires_at,
                &[switchboard_sfu::janus::VIDEOROOM_PLUGIN],
            ));
            info.token_expires_at = Some(expires_at);
        }
        info
    }
}

/// What a join needs to know about its room.
#[derive(Debug, Clone)]
pub struct RoomInfo {
    pub max_participants: u32,
    pub sfu: Option<SfuRoute>,
    /// The TURN/STUN URLs of the room's SfuNode (`spec.turn.urls`), empty when it has none.
    pub turn_urls: Vec<String>,
}

/// Where rooms and their placement come from.
pub trait RoomSource: Send + Sync {
    /// The room's limit and SFU, placing (or creating) the room first when the source does
    /// that. May wait, bounded, for a placement made elsewhere.
    fn resolve<'a>(
        &'a self,
        room: &'a RoomId,
        region: Option<&'a Region>,
    ) -> BoxFuture<'a, Result<RoomInfo, ResolveError>>;

    /// The room's SFU as it is now, without creating or placing anything: for `sfuRefresh`,
    /// which must follow a move. `None` when the source does not know the room.
    fn current_sfu<'a>(&'a self, room: &'a RoomId) -> BoxFuture<'a, Option<SfuRoute>>;

    /// Whether the source works now (for `/readyz`).
    fn is_healthy(&self) -> bool {
        true
    }

    /// Deletes the room where the source keeps rooms (the Room object), for the server API's
    /// "end a room"; `false` when there was nothing to delete. Sources without room objects
    /// have nothing to do: ending the call in the store is the whole of it.
    fn delete_room<'a>(&'a self, _room: &'a RoomId) -> BoxFuture<'a, Result<bool, ResolveError>> {
        Box::pin(std::future::ready(Ok(false)))
    }
}

/// No placement: every room takes `max_participants` and has no SFU.
#[derive(Debug, Clone, Copy)]
pub struct Standalone {
    pub max_participants: u32,
}

impl RoomSource for Standalone {
    fn resolve<'a>(
        &'a self,
        _room: &'a RoomId,
        _region: Option<&'a Region>,
    ) -> BoxFuture<'a, Result<RoomInfo, ResolveError>> {
        let info = RoomInfo {
            max_participants: self.max_participants,
            sfu: None,
            turn_urls: Vec::new(),
        };
        Box::pin(std::future::ready(Ok(info)))
    }

    fn current_sfu<'a>(&'a self, _room: &'a RoomId) -> BoxFuture<'a, Option<SfuRoute>> {
        Box::pin(std::future::ready(None))
    }
}
