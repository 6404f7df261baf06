//! Where a room's limit and SFU come from, behind one interface, [`RoomSource`]:
//!
//! - [`kubernetes::RoomDirectory`]: Room objects placed by the operator (`serve --namespace`);
//! - [`fixed::FixedPlacement`]: a fixed list of SFU nodes placed in this process (dev mode);
//! - [`Standalone`]: no placement at all; rooms exist while people are in them and `joined`
//!   carries no SFU.
//!
//! A source answers one question for a join, [`RoomSource::resolve`], and says whether it is
//! working, for `/readyz`. It never touches connections or room membership.

pub mod fixed;
pub mod kubernetes;

use futures::future::BoxFuture;

use crate::ids::{Region, RoomId};
use crate::protocol::SfuInfo;

pub use self::fixed::{FixedError, FixedNode, FixedPlacement};
pub use self::kubernetes::{AutoCreate, RoomDirectory};

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
    /// No node of a fixed list has room.
    #[error("no SFU node can take the room: {0}")]
    NoFit(String),
}

/// What a join needs to know about its room.
#[derive(Debug, Clone)]
pub struct RoomInfo {
    pub max_participants: u32,
    pub sfu: Option<SfuInfo>,
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

    /// Whether the source works now (for `/readyz`).
    fn is_healthy(&self) -> bool {
        true
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
}
