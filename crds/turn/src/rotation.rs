//! The TURN shared-secret rotation state machine, as a pure planner.
//!
//! The operator observes the rotation Secret and the TURN servers' secret set in Redis, calls
//! [`plan`], applies the single [`Step`] it returns, and starts over. Every step is one
//! persisted action, so a crash between or during steps loses nothing: the next reconcile
//! re-reads both stores and plans from there. This module does no I/O and knows no Kubernetes
//! types; the operator maps the Secret's `data` to and from a `BTreeMap<String, Vec<u8>>`.
//!
//! # Secret layout
//!
//! | key                      | value                                          | present |
//! |--------------------------|------------------------------------------------|---------|
//! | `current`                | secret used for minting (64 lowercase hex)     | always  |
//! | `current-created-at`     | unix seconds it was generated                  | always  |
//! | `current-since`          | unix seconds it became current                 | always  |
//! | `previous`               | the secret `current` replaced                  | during overlap |
//! | `previous-created-at`    | unix seconds it was generated                  | with `previous` |
//! | `previous-retired-at`    | unix seconds it stopped being current          | with `previous` |
//! | `next`                   | staged secret: in Redis, not yet minted with   | during a rotation |
//! | `next-created-at`        | unix seconds it was generated                  | with `next` |
//! | `rotate-request-handled` | last `switchboard.dev/rotate` value acted upon | once a request was seen |
//!
//! Timestamps are ASCII decimal. Signaling mounts the Secret and mints with the `current` file
//! only. Keys not in this table are ignored on read and not written back.
//!
//! # The cycle
//!
//! `Initialize` → (`PushToTurn`) → … rotation due → `StageNext` → `PushToTurn` (add next) →
//! `Promote` → … overlap over → `DropPrevious` → `PushToTurn` (remove old previous).
//!
//! # Guarantees
//!
//! - A secret is in the TURN set before any signaling pod can mint with it: the first secret
//!   is added before the Secret is written, later ones are staged as `next` and pushed before
//!   `Promote`.
//! - A retired secret stays valid (in the state, hence in the TURN set) until
//!   `retired_at + credential_ttl + propagation_margin`: a pod may mint with it until it
//!   notices the promotion (at most the margin later), and that credential lives for at most
//!   the TTL.
//! - `Promote` waits until there is no `previous`, so a promotion never cuts an overlap short
//!   and no pod can be more than one generation behind. At most three secrets
//!   ([`MAX_VALID_SECRETS`]: previous, current, next) are valid at once.
//! - A rotation request is recorded in the same write that stages the secret answering it, so
//!   it is acted on exactly once.
//!
//! # Assumptions
//!
//! - One operator applies steps at a time (leader election).
//! - Secret writes carry the observed `resourceVersion` (or are creates), so a step planned
//!   from a stale read fails with a conflict instead of overwriting newer state.
//! - Reads of the Secret never go backwards (a fresh GET or a watch cache, which only moves
//!   forward). A stale read can then at worst re-add a secret or remove a not-yet-promoted
//!   `next`, which the following reconcile repairs.
//! - coturn reads the secret set from Redis on every authentication, so the set in Redis is
//!   what the TURN servers hold.
//! - `propagation_margin_secs` covers the kubelet's sync delay for mounted Secrets (its sync
//!   period plus cache TTL, typically 60–90 s) and the operator's own latency between planning
//!   and writing.
//!
//! # Caveats
//!
//! - Rotation is not revocation: a forced rotation stops minting with the old secret, but it
//!   stays valid for the overlap. If a `previous` is still inside its overlap, the promotion
//!   waits for it, so a forced rotation can take up to `credential_ttl + margin`, or twice
//!   that when a `next` staged before the request has to be promoted first (a secret staged
//!   earlier does not answer a request: the request may be about a leak of the Secret).
//! - When rotations are due more often than `credential_ttl + margin`, they happen every
//!   `credential_ttl + margin` instead.
//! - If the Secret disappears, the next plan initializes a new secret and the old ones are
//!   removed from the TURN set: every outstanding credential stops working.
//! - A Secret that fails to parse must not be overwritten; [`RotationState::from_secret_data`]
//!   names the bad key so a human can repair it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::secret::{SecretError, SharedSecret, fingerprint_of};

/// Suggested `propagation_margin_secs`: the kubelet refreshes mounted Secrets within about
/// 60–90 s by default, plus room for the operator's own latency.
pub const DEFAULT_PROPAGATION_MARGIN_SECS: u64 = 120;

/// Upper bound on secrets valid at once: previous, current and next.
pub const MAX_VALID_SECRETS: usize = 3;

/// Keys of the rotation Secret's `data`.
pub mod keys {
    pub const CURRENT: &str = "current";
    pub const CURRENT_CREATED_AT: &str = "current-created-at";
    pub const CURRENT_SINCE: &str = "current-since";
    pub const PREVIOUS: &str = "previous";
    pub const PREVIOUS_CREATED_AT: &str = "previous-created-at";
    pub const PREVIOUS_RETIRED_AT: &str = "previous-retired-at";
    pub const NEXT: &str = "next";
    pub const NEXT_CREATED_AT: &str = "next-created-at";
    pub const ROTATE_REQUEST_HANDLED: &str = "rotate-request-handled";

    /// Every key this module reads or writes.
    pub const ALL: &[&str] = &[
        CURRENT,
        CURRENT_CREATED_AT,
        CURRENT_SINCE,
        PREVIOUS,
        PREVIOUS_CREATED_AT,
        PREVIOUS_RETIRED_AT,
        NEXT,
        NEXT_CREATED_AT,
        ROTATE_REQUEST_HANDLED,
    ];
}

#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    #[error("rotation Secret is missing key {key:?}")]
    MissingKey { key: &'static str },
    #[error("rotation Secret key {key:?} does not hold a valid shared secret")]
    InvalidSecret {
        key: &'static str,
        #[source]
        source: SecretError,
    },
    #[error("rotation Secret key {key:?} is not a decimal unix timestamp")]
    InvalidTimestamp { key: &'static str },
    #[error("rotation Secret key {key:?} is not UTF-8")]
    InvalidUtf8 { key: &'static str },
    #[error("rotation Secret keys {first:?} and {second:?} hold the same secret")]
    DuplicateSecret {
        first: &'static str,
        second: &'static str,
    },
    #[error("invalid rotation policy: {reason}")]
    InvalidPolicy { reason: &'static str },
    #[error("could not generate a shared secret")]
    Generate(#[source] SecretError),
}

impl RotationError {
    /// Stable, low-cardinality label for metrics and Event reasons.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::MissingKey { .. } => "missing_key",
            Self::InvalidSecret { .. } => "invalid_secret",
            Self::InvalidTimestamp { .. } => "invalid_timestamp",
            Self::InvalidUtf8 { .. } => "invalid_utf8",
            Self::DuplicateSecret { .. } => "duplicate_secret",
            Self::InvalidPolicy { .. } => "invalid_policy",
            Self::Generate(_) => "generate",
        }
    }
}

pub type Result<T, E = RotationError> = std::result::Result<T, E>;

/// How often to rotate and how long old secrets must outlive their retirement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotationPolicy {
    /// Rotate once `current` has been current this long.
    pub interval_secs: u64,
    /// The longest TTL signaling may give a credential.
    pub credential_ttl_secs: u64,
    /// How late a signaling pod may learn of a promotion; see
    /// [`DEFAULT_PROPAGATION_MARGIN_SECS`].
    pub propagation_margin_secs: u64,
}

impl RotationPolicy {
    pub fn validate(&self) -> Result<()> {
        if self.interval_secs == 0 {
            return Err(RotationError::InvalidPolicy {
                reason: "interval_secs must be at least 1",
            });
        }
        if self.credential_ttl_secs == 0 {
            return Err(RotationError::InvalidPolicy {
                reason: "credential_ttl_secs must be at least 1",
            });
        }
        Ok(())
    }

    /// How long a retired secret stays valid after `retired_at`.
    pub fn overlap_secs(&self) -> u64 {
        self.credential_ttl_secs
            .saturating_add(self.propagation_margin_secs)
    }
}

/// The secret signaling mints with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentSecret {
    pub secret: SharedSecret,
    pub created_at_unix: u64,
    /// When it became current; rotation age counts from here, not from generation, so a
    /// secret that waited as `next` is not rotated away as soon as it is promoted.
    pub current_since_unix: u64,
}

/// The secret `current` replaced, kept until its overlap ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviousSecret {
    pub secret: SharedSecret,
    pub created_at_unix: u64,
    pub retired_at_unix: u64,
}

/// A staged secret: persisted and pushed to TURN, but not minted with yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextSecret {
    pub secret: SharedSecret,
    pub created_at_unix: u64,
}

/// Everything the rotation Secret holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationState {
    pub current: CurrentSecret,
    pub previous: Option<PreviousSecret>,
    pub next: Option<NextSecret>,
    /// The last `switchboard.dev/rotate` annotation value a staged secret answered.
    pub rotate_request_handled: Option<String>,
}

impl RotationState {
    /// A fresh state whose only secret is `secret`. It answers any pending rotation request,
    /// since nothing has been minted with an older secret under this state.
    pub fn new(secret: SharedSecret, now_unix: u64, rotate_request: Option<&str>) -> Self {
        Self {
            current: CurrentSecret {
                secret,
                created_at_unix: now_unix,
                current_since_unix: now_unix,
            },
            previous: None,
            next: None,
            rotate_request_handled: rotate_request.map(str::to_owned),
        }
    }

    /// Reads the state from a Secret's `data`. `Ok(None)` when none of our keys are present
    /// (a new or emptied Secret); an error naming the key when anything is malformed.
    pub fn from_secret_data(data: &BTreeMap<String, Vec<u8>>) -> Result<Option<Self>> {
        if !keys::ALL.iter().any(|key| data.contains_key(*key)) {
            return Ok(None);
        }
        let current = CurrentSecret {
            secret: required_secret(data, keys::CURRENT)?,
            created_at_unix: required_timestamp(data, keys::CURRENT_CREATED_AT)?,
            current_since_unix: required_timestamp(data, keys::CURRENT_SINCE)?,
        };
        let previous = if group_present(
            data,
            &[
                keys::PREVIOUS,
                keys::PREVIOUS_CREATED_AT,
                keys::PREVIOUS_RETIRED_AT,
            ],
        ) {
            Some(PreviousSecret {
                secret: required_secret(data, keys::PREVIOUS)?,
                created_at_unix: required_timestamp(data, keys::PREVIOUS_CREATED_AT)?,
                retired_at_unix: required_timestamp(data, keys::PREVIOUS_RETIRED_AT)?,
            })
        } else {
            None
        };
        let next = if group_present(data, &[keys::NEXT, keys::NEXT_CREATED_AT]) {
            Some(NextSecret {
                secret: required_secret(data, keys::NEXT)?,
                created_at_unix: required_timestamp(data, keys::NEXT_CREATED_AT)?,
            })
        } else {
            None
        };
        let rotate_request_handled =
            match data.get(keys::ROTATE_REQUEST_HANDLED) {
                None => None,
                Some(bytes) => Some(String::from_utf8(bytes.clone()).map_err(|_| {
                    RotationError::InvalidUtf8 {
                        key: keys::ROTATE_REQUEST_HANDLED,
                    }
                })?),
            };
        let state = Self {
            current,
            previous,
            next,
            rotate_request_handled,
        };
        state.check_distinct()?;
        Ok(Some(state))
    }

    /// The Secret's `data` for this state: exactly the keys in the module's table.
    pub fn to_secret_data(&self) -> BTreeMap<String, Vec<u8>> {
        let mut data = BTreeMap::new();
        let mut put = |key: &str, value: &str| {
            data.insert(key.to_owned(), value.as_bytes().to_vec());
        };
        put(keys::CURRENT, self.current.secret.expose());
        put(
            keys::CURRENT_CREATED_AT,
            &self.current.created_at_unix.to_string(),
        );
        put(
            keys::CURRENT_SINCE,
            &self.current.current_since_unix.to_string(),
        );
        if let Some(previous) = &self.previous {
            put(keys::PREVIOUS, previous.secret.expose());
            put(
                keys::PREVIOUS_CREATED_AT,
                &previous.created_at_unix.to_string(),
            );
            put(
                keys::PREVIOUS_RETIRED_AT,
                &previous.retired_at_unix.to_string(),
            );
        }
        if let Some(next) = &self.next {
            put(keys::NEXT, next.secret.expose());
            put(keys::NEXT_CREATED_AT, &next.created_at_unix.to_string());
        }
        if let Some(handled) = &self.rotate_request_handled {
            put(keys::ROTATE_REQUEST_HANDLED, handled);
        }
        data
    }

    /// Secrets the TURN servers must accept: current, then previous and next when present.
    pub fn valid_secrets(&self) -> Vec<&SharedSecret> {
        std::iter::once(&self.current.secret)
            .chain(self.previous.as_ref().map(|p| &p.secret))
            .chain(self.next.as_ref().map(|n| &n.secret))
            .collect()
    }

    /// The secret signaling mints with.
    pub fn minting_secret(&self) -> &SharedSecret {
        &self.current.secret
    }

    /// When `previous` may be dropped, if there is one.
    pub fn previous_drop_at(&self, policy: &RotationPolicy) -> Option<u64> {
        self.previous.as_ref().map(|previous| {
            previous
                .retired_at_unix
                .saturating_add(policy.overlap_secs())
        })
    }

    fn check_distinct(&self) -> Result<()> {
        let named = [
            (keys::CURRENT, Some(&self.current.secret)),
            (keys::PREVIOUS, self.previous.as_ref().map(|p| &p.secret)),
            (keys::NEXT, self.next.as_ref().map(|n| &n.secret)),
        ];
        for (i, (first, a)) in named.iter().enumerate() {
            for (second, b) in named.iter().skip(i + 1) {
                if let (Some(a), Some(b)) = (a, b)
                    && a == b
                {
                    return Err(RotationError::DuplicateSecret { first, second });
                }
            }
        }
        Ok(())
    }
}

/// Secrets the TURN servers must accept; see [`RotationState::valid_secrets`].
pub fn valid_secrets(state: &RotationState) -> Vec<&SharedSecret> {
    state.valid_secrets()
}

/// The secret signaling mints with; see [`RotationState::minting_secret`].
pub fn minting_secret(state: &RotationState) -> &SharedSecret {
    state.minting_secret()
}

fn group_present(data: &BTreeMap<String, Vec<u8>>, group: &[&str]) -> bool {
    group.iter().any(|key| data.contains_key(*key))
}

fn required<'a>(data: &'a BTreeMap<String, Vec<u8>>, key: &'static str) -> Result<&'a [u8]> {
    data.get(key)
        .map(Vec::as_slice)
        .ok_or(RotationError::MissingKey { key })
}

fn required_secret(data: &BTreeMap<String, Vec<u8>>, key: &'static str) -> Result<SharedSecret> {
    let bytes = required(data, key)?;
    let text = std::str::from_utf8(bytes).map_err(|_| RotationError::InvalidUtf8 { key })?;
    SharedSecret::from_encoded(text).map_err(|source| RotationError::InvalidSecret { key, source })
}

fn required_timestamp(data: &BTreeMap<String, Vec<u8>>, key: &'static str) -> Result<u64> {
    let bytes = required(data, key)?;
    // Plain digits only: u64::from_str would also take a leading '+'.
    if bytes.is_empty() || !bytes.iter().all(u8::is_ascii_digit) {
        return Err(RotationError::InvalidTimestamp { key });
    }
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or(RotationError::InvalidTimestamp { key })
}

/// The one next action for the operator. After applying it, the operator re-observes and
/// plans again; nothing is carried over in memory.
#[derive(Clone, PartialEq, Eq)]
pub enum Step {
    /// There is no state. Add `state.current` to the TURN set first, then create (or update,
    /// with its `resourceVersion`) the Secret with `state.to_secret_data()`. In that order a
    /// crash leaves at most an unused secret in the TURN set, which the next `PushToTurn`
    /// removes, and never a minting secret the TURN servers do not know.
    Initialize { state: RotationState },
    /// Write the Secret with a freshly generated `next`.
    StageNext { state: RotationState },
    /// Make the TURN set equal the valid secrets: SADD `add`, then SREM `remove`, on
    /// `turn/realm/<realm>/secret`. Values are encoded secrets (or unknown strings found in
    /// the set); never log them, use [`fingerprint_of`].
    PushToTurn {
        add: BTreeSet<String>,
        remove: BTreeSet<String>,
    },
    /// Write the Secret with `next` as current and the old current as previous.
    Promote { state: RotationState },
    /// Write the Secret without `previous`; its overlap has ended.
    DropPrevious { state: RotationState },
    /// Nothing to do until `recheck_after_secs` from now, unless the inputs change.
    Idle { recheck_after_secs: u64 },
}

impl Step {
    /// Short name for logs, metrics and Event reasons.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Initialize { .. } => "Initialize",
            Self::StageNext { .. } => "StageNext",
            Self::PushToTurn { .. } => "PushToTurn",
            Self::Promote { .. } => "Promote",
            Self::DropPrevious { .. } => "DropPrevious",
            Self::Idle { .. } => "Idle",
        }
    }

    /// The state to write to the Secret, for the steps that write one.
    pub fn state_to_write(&self) -> Option<&RotationState> {
        match self {
            Self::Initialize { state }
            | Self::StageNext { state }
            | Self::Promote { state }
            | Self::DropPrevious { state } => Some(state),
            Self::PushToTurn { .. } | Self::Idle { .. } => None,
        }
    }
}

// Derived Debug would print the raw secrets in `add`/`remove`; show fingerprints instead.
impl fmt::Debug for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fingerprints =
            |set: &BTreeSet<String>| set.iter().map(|s| fingerprint_of(s)).collect::<Vec<_>>();
        match self {
            Self::PushToTurn { add, remove } => f
                .debug_struct("PushToTurn")
                .field("add", &fingerprints(add))
                .field("remove", &fingerprints(remove))
                .finish(),
            Self::Idle { recheck_after_secs } => f
                .debug_struct("Idle")
                .field("recheck_after_secs", recheck_after_secs)
                .finish(),
            Self::Initialize { state }
            | Self::StageNext { state }
            | Self::Promote { state }
            | Self::DropPrevious { state } => {
                f.debug_struct(self.name()).field("state", state).finish()
            }
        }
    }
}

/// Plans the next step, drawing new secrets from the OS CSPRNG.
///
/// `rotate_request` is the current value of the `switchboard.dev/rotate` annotation; a value
/// different from `state.rotate_request_handled` asks for a rotation. `turn_servers_hold` is
/// the TURN set as read from Redis (encoded secrets).
pub fn plan(
    state: Option<&RotationState>,
    now_unix: u64,
    policy: &RotationPolicy,
    rotate_request: Option<&str>,
    turn_servers_hold: &BTreeSet<String>,
) -> Result<Step> {
    plan_with(
        state,
        now_unix,
        policy,
        rotate_request,
        turn_servers_hold,
        SharedSecret::generate,
    )
}

/// [`plan`] with the source of new secrets supplied, for deterministic tests. `new_secret` is
/// called at most once, and only for `Initialize` and `StageNext`.
pub fn plan_with(
    state: Option<&RotationState>,
    now_unix: u64,
    policy: &RotationPolicy,
    rotate_request: Option<&str>,
    turn_servers_hold: &BTreeSet<String>,
    new_secret: impl FnOnce() -> Result<SharedSecret, SecretError>,
) -> Result<Step> {
    policy.validate()?;
    let Some(state) = state else {
        // Strays in the TURN set are left alone here: an empty read may be a cache that has
        // not synced yet, and wiping the set on it would break every live credential. Once a
        // state exists, the regular push removes whatever is not valid.
        let secret = new_secret().map_err(RotationError::Generate)?;
        return Ok(Step::Initialize {
            state: RotationState::new(secret, now_unix, rotate_request),
        });
    };

    // Repairing the TURN set comes first: it is what makes every other step safe (a next is
    // only promoted once held; a previous only leaves the set after leaving the state).
    let valid: BTreeSet<String> = state
        .valid_secrets()
        .into_iter()
        .map(|s| s.expose().to_owned())
        .collect();
    if &valid != turn_servers_hold {
        return Ok(Step::PushToTurn {
            add: valid.difference(turn_servers_hold).cloned().collect(),
            remove: turn_servers_hold.difference(&valid).cloned().collect(),
        });
    }

    let drop_at = state.previous_drop_at(policy);
    if drop_at.is_some_and(|at| now_unix >= at) {
        return Ok(Step::DropPrevious {
            state: RotationState {
                previous: None,
                ..state.clone()
            },
        });
    }

    if let Some(next) = &state.next {
        // Promoting now would turn a previous that is still in its overlap into nothing.
        if state.previous.is_none() {
            return Ok(Step::Promote {
                state: RotationState {
                    current: CurrentSecret {
                        secret: next.secret.clone(),
                        created_at_unix: next.created_at_unix,
                        current_since_unix: now_unix,
                    },
                    previous: Some(PreviousSecret {
                        secret: state.current.secret.clone(),
                        created_at_unix: state.current.created_at_unix,
                        retired_at_unix: now_unix,
                    }),
                    next: None,
                    rotate_request_handled: state.rotate_request_handled.clone(),
                },
            });
        }
    }

    let due_at = state
        .current
        .current_since_unix
        .saturating_add(policy.interval_secs);
    let requested = rotate_request
        .is_some_and(|request| state.rotate_request_handled.as_deref() != Some(request));
    if state.next.is_none() && (now_unix >= due_at || requested) {
        // Staging while a previous is still in its overlap is fine (three valid secrets at
        // most); it gets the new secret into the TURN set early, and promotion still waits.
        let secret = new_secret().map_err(RotationError::Generate)?;
        return Ok(Step::StageNext {
            state: RotationState {
                next: Some(NextSecret {
                    secret,
                    created_at_unix: now_unix,
                }),
                rotate_request_handled: if requested {
                    rotate_request.map(str::to_owned)
                } else {
                    state.rotate_request_handled.clone()
                },
                ..state.clone()
            },
        });
    }

    // Wake for whichever comes first: the drop of previous (which also unblocks a waiting
    // promotion) or the rotation of current. With a staged next only the drop can be pending.
    let wake_at = drop_at
        .into_iter()
        .chain(state.next.is_none().then_some(due_at))
        .min()
        .unwrap_or(due_at);
    Ok(Step::Idle {
        recheck_after_secs: wake_at.saturating_sub(now_unix).max(1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: RotationPolicy = RotationPolicy {
        interval_secs: 1000,
        credential_ttl_secs: 300,
        propagation_margin_secs: 120,
    };

    fn secret(n: u8) -> SharedSecret {
        SharedSecret::from_entropy([n; 32])
    }

    fn fixed(n: u8) -> impl FnOnce() -> Result<SharedSecret, SecretError> {
        move || Ok(secret(n))
    }

    fn held(state: &RotationState) -> BTreeSet<String> {
        state
            .valid_secrets()
            .into_iter()
            .map(|s| s.expose().to_owned())
            .collect()
    }

    fn set(secrets: &[&SharedSecret]) -> BTreeSet<String> {
        secrets.iter().map(|s| s.expose().to_owned()).collect()
    }

    fn step(
        state: Option<&RotationState>,
        now: u64,
        request: Option<&str>,
        hold: &BTreeSet<String>,
    ) -> Step {
        plan_with(state, now, &POLICY, request, hold, fixed(9)).unwrap()
    }

    /// Current A since t=0 with no previous or next.
    fn steady() -> RotationState {
        RotationState::new(secret(1), 0, None)
    }

    /// Current B since t=2000, previous A retired at 2000.
    fn after_promotion() -> RotationState {
        RotationState {
            current: CurrentSecret {
                secret: secret(2),
                created_at_unix: 1500,
                current_since_unix: 2000,
            },
            previous: Some(PreviousSecret {
                secret: secret(1),
                created_at_unix: 0,
                retired_at_unix: 2000,
            }),
            next: None,
            rotate_request_handled: None,
        }
    }

    #[test]
    fn no_state_initializes_with_the_request_recorded() {
        let step = step(None, 50, Some("r1"), &BTreeSet::new());
        assert_eq!(
            step,
            Step::Initialize {
                state: RotationState {
                    current: CurrentSecret {
                        secret: secret(9),
                        created_at_unix: 50,
                        current_since_unix: 50
                    },
                    previous: None,
                    next: None,
                    rotate_request_handled: Some("r1".into()),
                }
            }
        );
    }

    #[test]
    fn no_state_leaves_strays_in_the_turn_set_for_later() {
        let hold = set(&[&secret(7)]);
        assert!(matches!(
            step(None, 0, None, &hold),
            Step::Initialize { .. }
        ));
    }

    #[test]
    fn fresh_state_is_pushed_and_strays_removed() {
        let state = steady();
        let stray = "not-a-secret".to_owned();
        let hold = BTreeSet::from([stray.clone()]);
        assert_eq!(
            step(Some(&state), 10, None, &hold),
            Step::PushToTurn {
                add: set(&[&secret(1)]),
                remove: BTreeSet::from([stray])
            }
        );
    }

    #[test]
    fn steady_state_idles_until_rotation_is_due() {
        let state = steady();
        assert_eq!(
            step(Some(&state), 10, None, &held(&state)),
            Step::Idle {
                recheck_after_secs: 990
            }
        );
        assert_eq!(
            step(Some(&state), 999, None, &held(&state)),
            Step::Idle {
                recheck_after_secs: 1
            }
        );
    }

    #[test]
    fn due_rotation_stages_next() {
        let state = steady();
        let Step::StageNext { state: staged } = step(Some(&state), 1000, None, &held(&state))
        else {
            panic!("expected StageNext");
        };
        assert_eq!(
            staged.next,
            Some(NextSecret {
                secret: secret(9),
                created_at_unix: 1000
            })
        );
        assert_eq!(staged.current, state.current);
        assert_eq!(staged.rotate_request_handled, None);
    }

    #[test]
    fn rotate_request_stages_next_early_and_is_recorded() {
        let state = steady();
        let Step::StageNext { state: staged } = step(Some(&state), 10, Some("r1"), &held(&state))
        else {
            panic!("expected StageNext");
        };
        assert_eq!(staged.rotate_request_handled.as_deref(), Some("r1"));
        // The same request value does not rotate again.
        let promoted = RotationState {
            rotate_request_handled: Some("r1".into()),
            ..state.clone()
        };
        assert!(matches!(
            step(Some(&promoted), 10, Some("r1"), &held(&promoted)),
            Step::Idle { .. }
        ));
        // Removing the annotation is not a request either.
        assert!(matches!(
            step(Some(&promoted), 10, None, &held(&promoted)),
            Step::Idle { .. }
        ));
    }

    #[test]
    fn staged_next_is_pushed_before_promotion() {
        let state = RotationState {
            next: Some(NextSecret {
                secret: secret(2),
                created_at_unix: 1000,
            }),
            ..steady()
        };
        let hold = set(&[&secret(1)]);
        assert_eq!(
            step(Some(&state), 1000, None, &hold),
            Step::PushToTurn {
                add: set(&[&secret(2)]),
                remove: BTreeSet::new()
            }
        );
    }

    #[test]
    fn held_next_is_promoted() {
        let state = RotationState {
            next: Some(NextSecret {
                secret: secret(2),
                created_at_unix: 1000,
            }),
            rotate_request_handled: Some("r".into()),
            ..steady()
        };
        let Step::Promote { state: promoted } = step(Some(&state), 1005, None, &held(&state))
        else {
            panic!("expected Promote");
        };
        assert_eq!(
            promoted,
            RotationState {
                current: CurrentSecret {
                    secret: secret(2),
                    created_at_unix: 1000,
                    current_since_unix: 1005
                },
                previous: Some(PreviousSecret {
                    secret: secret(1),
                    created_at_unix: 0,
                    retired_at_unix: 1005
                }),
                next: None,
                rotate_request_handled: Some("r".into()),
            }
        );
    }

    #[test]
    fn previous_is_kept_for_ttl_plus_margin() {
        let state = after_promotion();
        // retired 2000 + ttl 300 + margin 120 = 2420.
        assert_eq!(state.previous_drop_at(&POLICY), Some(2420));
        assert_eq!(
            step(Some(&state), 2419, None, &held(&state)),
            Step::Idle {
                recheck_after_secs: 1
            }
        );
        assert_eq!(
            step(Some(&state), 2420, None, &held(&state)),
            Step::DropPrevious {
                state: RotationState {
                    previous: None,
                    ..state.clone()
                }
            }
        );
    }

    #[test]
    fn dropped_previous_is_removed_from_turn_afterwards() {
        let state = RotationState {
            previous: None,
            ..after_promotion()
        };
        let hold = set(&[&secret(1), &secret(2)]);
        assert_eq!(
            step(Some(&state), 2420, None, &hold),
            Step::PushToTurn {
                add: BTreeSet::new(),
                remove: set(&[&secret(1)])
            }
        );
    }

    #[test]
    fn previous_is_not_removed_from_turn_while_in_state() {
        let state = after_promotion();
        for hold in [held(&state), set(&[&secret(2)])] {
            let step = step(Some(&state), 2100, None, &hold);
            if let Step::PushToTurn { remove, .. } = &step {
                assert!(!remove.contains(secret(1).expose()), "{step:?}");
            }
        }
    }

    #[test]
    fn request_during_overlap_stages_but_does_not_promote() {
        let state = after_promotion();
        let Step::StageNext { state: staged } = step(Some(&state), 2100, Some("r2"), &held(&state))
        else {
            panic!("expected StageNext");
        };
        assert_eq!(staged.valid_secrets().len(), MAX_VALID_SECRETS);
        // Pushed, but previous is still inside its overlap: wait for the drop, not promote.
        assert_eq!(
            step(Some(&staged), 2100, Some("r2"), &held(&staged)),
            Step::Idle {
                recheck_after_secs: 320
            }
        );
        // At the drop time previous goes first, then next is promoted.
        let Step::DropPrevious { state: dropped } =
            step(Some(&staged), 2420, Some("r2"), &held(&staged))
        else {
            panic!("expected DropPrevious");
        };
        let hold = held(&staged);
        assert!(matches!(
            step(Some(&dropped), 2420, Some("r2"), &hold),
            Step::PushToTurn { .. }
        ));
        assert!(matches!(
            step(Some(&dropped), 2420, Some("r2"), &held(&dropped)),
            Step::Promote { .. }
        ));
    }

    #[test]
    fn idle_wakes_for_the_earlier_of_drop_and_rotation() {
        let short = RotationPolicy {
            interval_secs: 100,
            ..POLICY
        };
        let state = after_promotion();
        let idle = plan_with(Some(&state), 2050, &short, None, &held(&state), fixed(9)).unwrap();
        assert_eq!(
            idle,
            Step::Idle {
                recheck_after_secs: 50
            }
        );
        let idle = plan_with(Some(&state), 2050, &POLICY, None, &held(&state), fixed(9)).unwrap();
        assert_eq!(
            idle,
            Step::Idle {
                recheck_after_secs: 370
            }
        );
    }

    #[test]
    fn promoted_secret_is_not_rotated_straight_away() {
        // Generated long ago while waiting as next, but current only since 5000.
        let state = RotationState {
            current: CurrentSecret {
                secret: secret(2),
                created_at_unix: 0,
                current_since_unix: 5000,
            },
            ..steady()
        };
        assert!(matches!(
            step(Some(&state), 5001, None, &held(&state)),
            Step::Idle { .. }
        ));
    }

    #[test]
    fn clock_going_backwards_never_drops_or_rotates_early() {
        let state = after_promotion();
        assert!(matches!(
            step(Some(&state), 10, None, &held(&state)),
            Step::Idle { .. }
        ));
    }

    #[test]
    fn invalid_policy_and_generator_failures_are_errors() {
        let zero = RotationPolicy {
            interval_secs: 0,
            ..POLICY
        };
        let err = plan_with(None, 0, &zero, None, &BTreeSet::new(), fixed(1)).unwrap_err();
        assert_eq!(err.metric_label(), "invalid_policy");
        let zero_ttl = RotationPolicy {
            credential_ttl_secs: 0,
            ..POLICY
        };
        assert!(zero_ttl.validate().is_err());
        let failing = || Err(SecretError::BadLength { len: 0 });
        let err = plan_with(None, 0, &POLICY, None, &BTreeSet::new(), failing).unwrap_err();
        assert_eq!(err.metric_label(), "generate");
    }

    #[test]
    fn real_generator_is_used_by_plan() {
        let step = plan(None, 0, &POLICY, None, &BTreeSet::new()).unwrap();
        let state = step.state_to_write().unwrap();
        assert_eq!(state.minting_secret().expose().len(), 64);
    }

    #[test]
    fn secret_data_roundtrips_every_shape() {
        let full = RotationState {
            next: Some(NextSecret {
                secret: secret(3),
                created_at_unix: 2100,
            }),
            rotate_request_handled: Some("2024-06-01 ☃".into()),
            ..after_promotion()
        };
        for state in [steady(), after_promotion(), full] {
            let data = state.to_secret_data();
            assert!(data.keys().all(|k| keys::ALL.contains(&k.as_str())));
            assert_eq!(RotationState::from_secret_data(&data).unwrap(), Some(state));
        }
    }

    #[test]
    fn secret_data_layout_is_documented_text() {
        let data = after_promotion().to_secret_data();
        assert_eq!(data["current"], secret(2).expose().as_bytes());
        assert_eq!(data["current-since"], b"2000");
        assert_eq!(data["previous-retired-at"], b"2000");
        assert!(!data.contains_key("next"));
    }

    #[test]
    fn empty_or_foreign_secret_data_is_no_state() {
        assert_eq!(
            RotationState::from_secret_data(&BTreeMap::new()).unwrap(),
            None
        );
        let foreign = BTreeMap::from([("ca.crt".to_owned(), b"x".to_vec())]);
        assert_eq!(RotationState::from_secret_data(&foreign).unwrap(), None);
    }

    #[test]
    fn malformed_secret_data_names_the_key() {
        let good = RotationState {
            next: Some(NextSecret {
                secret: secret(3),
                created_at_unix: 2100,
            }),
            rotate_request_handled: Some("r".into()),
            ..after_promotion()
        }
        .to_secret_data();
        let cases: Vec<(&str, Option<&[u8]>, &str)> = vec![
            ("current", None, "missing_key"),
            ("current-since", None, "missing_key"),
            ("previous-retired-at", None, "missing_key"),
            ("previous", None, "missing_key"),
            ("next-created-at", None, "missing_key"),
            ("current", Some(b"short"), "invalid_secret"),
            ("next", Some(&[0xff; 64]), "invalid_utf8"),
            ("current-created-at", Some(b"+5"), "invalid_timestamp"),
            ("current-created-at", Some(b""), "invalid_timestamp"),
            (
                "previous-created-at",
                Some(b"99999999999999999999999"),
                "invalid_timestamp",
            ),
            ("rotate-request-handled", Some(&[0xc3]), "invalid_utf8"),
        ];
        for (key, value, label) in cases {
            let mut data = good.clone();
            match value {
                None => data.remove(key),
                Some(v) => data.insert(key.to_owned(), v.to_vec()),
            };
            let err = RotationState::from_secret_data(&data).unwrap_err();
            assert_eq!(err.metric_label(), label, "{key}: {err}");
            assert!(err.to_string().contains(key), "{key}: {err}");
        }
    }

    #[test]
    fn duplicate_secrets_are_refused() {
        let mut data = after_promotion().to_secret_data();
        data.insert("previous".into(), secret(2).expose().as_bytes().to_vec());
        assert!(matches!(
            RotationState::from_secret_data(&data),
            Err(RotationError::DuplicateSecret {
                first: "current",
                second: "previous"
            })
        ));
    }

    #[test]
    fn debug_output_never_shows_secrets() {
        let state = after_promotion();
        let steps = [
            Step::PushToTurn {
                add: held(&state),
                remove: set(&[&secret(5)]),
            },
            Step::Promote {
                state: state.clone(),
            },
        ];
        for step in steps {
            let shown = format!("{step:?}");
            for s in [secret(1), secret(2), secret(5)] {
                assert!(!shown.contains(s.expose()), "{shown}");
            }
        }
    }

    #[test]
    fn free_functions_match_methods() {
        let state = after_promotion();
        assert_eq!(minting_secret(&state), &secret(2));
        assert_eq!(valid_secrets(&state), vec![&secret(2), &secret(1)]);
    }
}
