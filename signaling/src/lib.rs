//! `switchboard-signaling`: the stateless WebSocket signaling server.
//!
//! This library is the whole server, so tests can reach every part. Its pure modules have no
//! sockets, clocks, Redis or Kubernetes in them, so every rule can be tested directly:
//! - [`ids`]: room, participant and user ids, display names and region hints, validated once
//!   at the edge because they end up in Redis keys and Kubernetes names;
//! - [`protocol`]: the versioned JSON wire protocol (`docs/protocol.md` is its reference);
//! - [`auth`]: join-token (JWT) verification, done before the WebSocket upgrade.
//! - [`limits`]: the per-connection rate limit.
//!
//! The server around it: [`server`] (HTTP, upgrade, shutdown, the store's event loop),
//! [`session`] (one connection, from `join` to close), [`store`] (room state and message
//! delivery across pods: the Redis layout is documented there), [`hub`] (this process's
//! connections and in-order delivery to them), [`rooms`] (Rooms and SfuNodes from
//! Kubernetes), [`turn`] (ICE servers), [`metrics`], [`config`] (command line).

pub mod auth;
pub mod config;
pub mod dev;
pub mod hub;
pub mod ids;
pub mod limits;
pub mod metrics;
pub mod protocol;
pub mod rooms;
pub mod server;
pub mod session;
pub mod store;
pub mod turn;
