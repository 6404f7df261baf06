//! The pure half of Switchboard's SFU adapters: what the operator and signaling must agree on
//! for each [`SfuKind`], with no I/O, so both sides compute the same ids, pins and tokens.
//!
//! - [`janus`]: the `JanusVideoRoom` kind: signed tokens, the room's id and pin on Janus, and
//!   the credentials Secret.
//! - [`janus_config`]: the configuration files of a Janus Switchboard starts itself (dev
//!   mode's `--janus`, the tests).
//!
//! The I/O half (creating rooms, reading health and load) lives in the operator; the adapter
//! contract a new kind implements is docs/sfu.md.

pub mod janus;
pub mod janus_config;

pub use switchboard_crds::SfuKind;

/// Why SFU credentials or inputs could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SfuError {
    /// The credentials Secret lacks a key this kind needs.
    #[error("SFU credentials Secret has no key {key:?} (a {kind} node needs {needs})")]
    MissingKey {
        key: &'static str,
        kind: &'static str,
        needs: &'static str,
    },
    /// A key is present but unusable.
    #[error("SFU credentials Secret key {key:?} is {problem}")]
    BadKey {
        key: &'static str,
        problem: &'static str,
    },
}
