//! Simulates the operator driving `rotation::plan` against a Secret store and a TURN set,
//! with crashes mid-step, stale (but monotonic) Secret reads, write conflicts, clock jumps and
//! rotation requests, and checks that no credential signaling could mint is ever refused by
//! the TURN servers before it expires.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use switchboard_turn::credentials::{mint, verify};
use switchboard_turn::rotation::{
    MAX_VALID_SECRETS, RotationPolicy, RotationState, Step, plan_with,
};
use switchboard_turn::secret::SharedSecret;

// Helpers live in a cfg(test) module so clippy treats their asserts as test code.
#[cfg(test)]
mod sim {
    use super::*;

    /// One version of the Secret object: its data and its rotate annotation.
    #[derive(Clone)]
    pub struct Version {
        pub data: BTreeMap<String, Vec<u8>>,
        pub annotation: Option<String>,
    }

    /// A point in simulated time. `seq` orders events within the same second.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
    struct Instant {
        pub time: u64,
        seq: u64,
    }

    /// When a secret was in the TURN set.
    #[derive(Debug)]
    struct Presence {
        pub added: Instant,
        pub removed: Option<Instant>,
    }

    /// A stretch during which a secret was `current` in the latest Secret version.
    #[derive(Debug)]
    struct CurrentSpan {
        pub secret: String,
        pub from: Instant,
        pub until: Option<Instant>,
    }

    pub struct World {
        pub policy: RotationPolicy,
        pub now: u64,
        seq: u64,
        pub versions: Vec<Version>,
        /// Index of the version the operator's cache shows; never moves backwards.
        pub cache: usize,
        pub turn: BTreeSet<String>,
        presence: BTreeMap<String, Vec<Presence>>,
        spans: Vec<CurrentSpan>,
        minted: u64,
        requests: u64,
        /// Credentials minted along the way, checked against the TURN set after every change.
        live: Vec<(String, String, u64)>,
    }

    #[derive(Debug, Clone)]
    pub enum Op {
        Advance(u64),
        /// `crash_after`: how many sub-actions of the step complete before the process dies.
        /// `catch_up`: how far the cache moves towards the latest version before reading.
        Reconcile {
            crash_after: Option<u8>,
            catch_up: u8,
        },
        Restart,
        Request,
    }

    impl World {
        pub fn new(policy: RotationPolicy, start: u64) -> Self {
            Self {
                policy,
                now: start,
                seq: 0,
                versions: vec![Version {
                    data: BTreeMap::new(),
                    annotation: None,
                }],
                cache: 0,
                turn: BTreeSet::new(),
                presence: BTreeMap::new(),
                spans: Vec::new(),
                minted: 0,
                requests: 0,
                live: Vec::new(),
            }
        }

        fn instant(&mut self) -> Instant {
            self.seq += 1;
            Instant {
                time: self.now,
                seq: self.seq,
            }
        }

        pub fn latest(&self) -> usize {
            self.versions.len() - 1
        }

        pub fn state_at(&self, index: usize) -> Option<RotationState> {
            RotationState::from_secret_data(&self.versions[index].data)
                .expect("every persisted version parses")
        }

        /// Appends a version, recording when the minting secret changes.
        fn persist(&mut self, version: Version) {
            let before = self.state_at(self.latest());
            self.versions.push(version);
            let after = self.state_at(self.latest());
            if let Some(state) = &after {
                let valid = state.valid_secrets();
                assert!(
                    valid.len() <= MAX_VALID_SECRETS,
                    "{} valid secrets",
                    valid.len()
                );
                let distinct: BTreeSet<_> = valid.iter().map(|s| s.expose()).collect();
                assert_eq!(distinct.len(), valid.len(), "valid secrets are distinct");
            }
            let old = before.map(|s| s.minting_secret().expose().to_owned());
            let new = after.map(|s| s.minting_secret().expose().to_owned());
            if old != new {
                let at = self.instant();
                if let Some(span) = self.spans.last_mut() {
                    span.until = Some(at);
                }
                if let Some(secret) = new {
                    assert!(
                        self.spans.iter().all(|s| s.secret != secret),
                        "a secret becomes current at most once"
                    );
                    self.spans.push(CurrentSpan {
                        secret,
                        from: at,
                        until: None,
                    });
                }
                self.mint_everything_mintable();
            }
        }

        fn turn_add(&mut self, secret: &str) {
            if self.turn.insert(secret.to_owned()) {
                let at = self.instant();
                self.presence
                    .entry(secret.to_owned())
                    .or_default()
                    .push(Presence {
                        added: at,
                        removed: None,
                    });
            }
        }

        fn turn_remove(&mut self, secret: &str) {
            if self.turn.remove(secret) {
                let at = self.instant();
                if let Some(p) = self
                    .presence
                    .get_mut(secret)
                    .and_then(|list| list.last_mut())
                {
                    p.removed = Some(at);
                }
                self.check_live_credentials();
            }
        }

        fn fresh_secret(&mut self) -> SharedSecret {
            self.minted += 1;
            let mut entropy = [0u8; 32];
            entropy[..8].copy_from_slice(&self.minted.to_be_bytes());
            SharedSecret::from_entropy(entropy)
        }

        /// Secrets some signaling pod may mint with now: the current of any Secret version that
        /// was latest within the last propagation margin (a pod's mount may lag that much).
        fn mintable_now(&self) -> Vec<String> {
            let horizon = self.now.saturating_sub(self.policy.propagation_margin_secs);
            self.spans
                .iter()
                .filter(|span| span.until.is_none_or(|until| until.time >= horizon))
                .map(|span| span.secret.clone())
                .collect()
        }

        /// Mints a longest-lived credential with every mintable secret; each must verify now.
        fn mint_everything_mintable(&mut self) {
            for secret in self.mintable_now() {
                let cred = mint(
                    secret.as_bytes(),
                    "sim-user",
                    self.now,
                    self.policy.credential_ttl_secs,
                )
                .unwrap();
                self.live
                    .push((cred.username, cred.password, cred.expires_at_unix));
            }
            self.check_live_credentials();
        }

        fn check_live_credentials(&mut self) {
            let now = self.now;
            self.live.retain(|(_, _, expires)| *expires > now);
            let secrets: Vec<&[u8]> = self.turn.iter().map(|s| s.as_bytes()).collect();
            for (username, password, _) in &self.live {
                assert_eq!(
                    verify(&secrets, username, password, now),
                    Ok(()),
                    "credential {username} refused by the TURN set at {now}"
                );
            }
        }

        pub fn advance(&mut self, secs: u64) {
            self.now += secs;
            self.mint_everything_mintable();
        }

        pub fn request(&mut self) {
            self.requests += 1;
            let latest = self.versions[self.latest()].clone();
            self.persist(Version {
                annotation: Some(format!("r{}", self.requests)),
                ..latest
            });
        }

        /// One reconcile: observe (possibly stale), plan, apply until `crash_after` sub-actions.
        pub fn reconcile(&mut self, crash_after: Option<u8>, catch_up: u8) -> Step {
            let behind = self.latest() - self.cache;
            self.cache += usize::from(catch_up) % (behind + 1);
            let observed = self.cache;
            let state = self.state_at(observed);
            let annotation = self.versions[observed].annotation.clone();
            let hold = self.turn.clone();
            let fresh = self.fresh_secret();
            let step = plan_with(
                state.as_ref(),
                self.now,
                &self.policy,
                annotation.as_deref(),
                &hold,
                || Ok(fresh),
            )
            .unwrap();

            let mut budget = crash_after.map_or(u32::MAX, u32::from);
            let mut act = || {
                if budget == 0 {
                    return false;
                }
                budget -= 1;
                true
            };
            match &step {
                Step::Initialize { state } => {
                    if act() {
                        self.turn_add(state.minting_secret().expose());
                        if act() {
                            self.write(observed, state);
                        }
                    }
                }
                Step::StageNext { state }
                | Step::Promote { state }
                | Step::DropPrevious { state } => {
                    if act() {
                        self.write(observed, state);
                    }
                }
                Step::PushToTurn { add, remove } => {
                    for secret in add {
                        if !act() {
                            return step;
                        }
                        self.turn_add(secret);
                    }
                    for secret in remove {
                        if !act() {
                            return step;
                        }
                        self.turn_remove(secret);
                    }
                }
                Step::Idle { .. } => {}
            }
            step
        }

        /// A write guarded by the observed resourceVersion, like a Kubernetes update.
        fn write(&mut self, observed: usize, state: &RotationState) {
            if observed != self.latest() {
                return; // 409 Conflict: planned from a stale read.
            }
            let annotation = self.versions[observed].annotation.clone();
            self.persist(Version {
                data: state.to_secret_data(),
                annotation,
            });
        }

        /// Exact check over the whole history: each minting secret was in the TURN set before it
        /// became current and stayed there until the last credential a lagging pod could mint
        /// with it had expired.
        pub fn check_history(&self) {
            let overlap = self.policy.propagation_margin_secs + self.policy.credential_ttl_secs;
            for span in &self.spans {
                let stints = self
                    .presence
                    .get(&span.secret)
                    .map_or(&[][..], Vec::as_slice);
                let covering = stints
                    .iter()
                    .find(|p| p.added < span.from && p.removed.is_none_or(|r| r > span.from));
                let Some(covering) = covering else {
                    panic!(
                        "secret became current at {:?} without being in the TURN set",
                        span.from
                    );
                };
                match (span.until, covering.removed) {
                    (_, None) => {}
                    (None, Some(removed)) => {
                        panic!("current secret removed from TURN at {removed:?}")
                    }
                    (Some(until), Some(removed)) => assert!(
                        removed.time >= until.time + overlap,
                        "secret retired at {} removed at {}, before {}",
                        until.time,
                        removed.time,
                        until.time + overlap
                    ),
                }
            }
        }
    }
}

use sim::{Op, World};

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u64..250).prop_map(Op::Advance),
        6 => (prop::option::weighted(0.3, 0u8..4), any::<u8>())
            .prop_map(|(crash_after, catch_up)| Op::Reconcile { crash_after, catch_up }),
        1 => Just(Op::Restart),
        1 => Just(Op::Request),
    ]
}

fn policy() -> impl Strategy<Value = RotationPolicy> {
    (1u64..200, 1u64..100, 0u64..60).prop_map(|(interval, ttl, margin)| RotationPolicy {
        interval_secs: interval,
        credential_ttl_secs: ttl,
        propagation_margin_secs: margin,
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Under arbitrary crashes, stale reads, conflicts, clock advances and rotation requests,
    /// every credential a signaling pod could mint verifies until it expires; then, once the
    /// operator runs undisturbed, a new rotation request is answered within two overlaps and
    /// the TURN set converges to exactly the valid secrets.
    #[test]
    fn crashes_never_break_a_live_credential(
        policy in policy(),
        start in 0u64..2_000_000_000,
        ops in prop::collection::vec(op(), 1..80),
    ) {
        let mut world = World::new(policy, start);
        for op in ops {
            match op {
                Op::Advance(secs) => world.advance(secs),
                Op::Reconcile { crash_after, catch_up } => {
                    world.reconcile(crash_after, catch_up);
                }
                Op::Restart => world.cache = world.latest(),
                Op::Request => world.request(),
            }
        }

        // Undisturbed operation: fresh reads, no crashes, sleeping exactly as told.
        world.request();
        let asked_at = world.now;
        let asked = world.versions[world.latest()].annotation.clone();
        let mut answered = false;
        for _ in 0..200 {
            world.cache = world.latest();
            if let Step::Idle { recheck_after_secs } = world.reconcile(None, 0) {
                let state = world.state_at(world.latest()).expect("initialized");
                let valid: BTreeSet<String> =
                    state.valid_secrets().iter().map(|s| s.expose().to_owned()).collect();
                prop_assert_eq!(&valid, &world.turn, "TURN set converged");
                if state.rotate_request_handled == asked
                    && state.next.is_none()
                    && state.current.created_at_unix >= asked_at
                {
                    answered = true;
                    break;
                }
                prop_assert!(recheck_after_secs >= 1);
                world.advance(recheck_after_secs);
            }
        }
        prop_assert!(answered, "rotation request not answered");
        prop_assert!(
            world.now <= asked_at + 2 * policy.overlap_secs(),
            "answered at {}, asked at {asked_at}, overlap {}",
            world.now,
            policy.overlap_secs()
        );
        world.check_history();
    }
}

/// A long undisturbed run rotates on schedule, never holds more than three secrets in the
/// TURN set, and never lets a minting secret age past interval + overlap.
#[test]
fn undisturbed_operator_rotates_on_schedule() {
    let policy = RotationPolicy {
        interval_secs: 600,
        credential_ttl_secs: 300,
        propagation_margin_secs: 120,
    };
    let mut world = World::new(policy, 1_700_000_000);
    let mut promotions = 0;
    for _ in 0..2_000 {
        world.cache = world.latest();
        match world.reconcile(None, 0) {
            Step::Idle { recheck_after_secs } => world.advance(recheck_after_secs),
            Step::Promote { .. } => promotions += 1,
            _ => {}
        }
        assert!(world.turn.len() <= MAX_VALID_SECRETS);
        let state = world.state_at(world.latest()).expect("initialized");
        let age = world.now - state.current.current_since_unix;
        assert!(
            age <= policy.interval_secs + policy.overlap_secs(),
            "age {age}"
        );
    }
    assert!(promotions > 50, "only {promotions} promotions");
    world.check_history();
}
