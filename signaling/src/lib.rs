//! `switchboard-signaling`: the stateless WebSocket signaling server.
//!
//! This library is the whole server, so tests can reach every part. Its layers only point
//! down (a module never imports one above it):
//!
//! 1. wiring: [`serve`] (the command line to a running server) and [`dev`] (the same, with a
//!    fixed SFU list, an in-memory store and the demo page);
//! 2. [`http`]: `/v1/ws` with the join token checked before the upgrade, probes, `/metrics`,
//!    the demo page, graceful shutdown, and the server API on its own listener
//!    ([`http::admin`]);
//! 3. [`session`]: one connection, from `join` to close;
//! 4. [`state`]: what every connection shares, and the tasks that deliver store events and
//!    recover after a store outage;
//! 5. [`rooms`] (each room's limit and SFU, from Kubernetes or a fixed list, behind one
//!    trait), [`hub`] (this process's connections and in-order delivery to them), [`store`]
//!    (room state and delivery across pods; the Redis layout is documented there), [`ice`]
//!    (ICE servers and TURN credentials), [`metrics`], [`limits`] (the per-connection rate
//!    limit), [`webhook`] (the store's room facts posted, signed, to the backend);
//! 6. [`protocol`] (the versioned JSON wire protocol; `docs/protocol.md` is its reference)
//!    and [`auth`] (join-token verification and minting), pure;
//! 7. [`ids`]: room, participant and user ids, display names and region hints, validated once
//!    at the edge because they end up in Redis keys and Kubernetes names.
//!
//! [`config`] is the command line, read by the wiring; [`admin_client`] is the server API's
//! client, used by the `room` commands.

pub mod admin_client;
pub mod auth;
pub mod config;
pub mod dev;
pub mod http;
pub mod hub;
pub mod ice;
pub mod ids;
pub mod limits;
pub mod metrics;
pub mod protocol;
pub mod rooms;
pub mod serve;
pub mod session;
pub mod state;
pub mod store;
pub mod webhook;
