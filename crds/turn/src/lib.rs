//! TURN support for the Switchboard operator and signaling, as pure functions.
//!
//! - [`credentials`]: mint and verify TURN REST API credentials (coturn `use-auth-secret`).
//! - [`secret`]: generate and validate the shared secret, and keep it out of logs.
//! - [`rotation`]: plan shared-secret rotation one persisted step at a time.
//! - [`peer_ranges`]: turn CIDRs into coturn `denied-peer-ip` ranges.
//!
//! No I/O, no async, no Kubernetes types: callers pass the clock, the Secret's data and what
//! they read from Redis, and apply the results themselves. The only side effect in the crate
//! is reading the OS random number generator in [`secret::SharedSecret::generate`].

pub mod credentials;
pub mod peer_ranges;
pub mod rotation;
pub mod secret;

pub use credentials::{CredentialError, TurnCredential, mint, verify};
pub use peer_ranges::{
    DEFAULT_DENIED_CIDRS, IpRange, PeerRangeError, cidr_to_range, coturn_denied_peer_lines,
};
pub use rotation::{RotationError, RotationPolicy, RotationState, Step, plan};
pub use secret::{SecretError, SharedSecret};
