//! TURN shared-secret rotation end to end: the operator process rotates its Secret on a real
//! apiserver and pushes the valid secrets into the Redis user database of a real coturn, and
//! `turnutils_uclient` allocates relays with credentials minted from whatever the Secret says.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams};
use switchboard_tests::coturn::{Allocation, Outcome};
use switchboard_tests::objects::wait_for;
use switchboard_tests::{ControlPlane, Coturn, OperatorProcess, RedisServer, fast_args};
use switchboard_turn::credentials::{TurnCredential, mint};
use switchboard_turn::rotation::RotationState;
use switchboard_turn::secret::SharedSecret;
use tokio::task::{JoinSet, block_in_place};

const NS: &str = "turn";
const SECRET_NAME: &str = "turn-shared-secret";
const REALM: &str = "switchboard.test";
/// Credential TTL given to the operator and used for every credential minted here.
const TTL: u64 = 4;

/// A minting loop iteration every this long.
const LOOP_PERIOD: Duration = Duration::from_millis(500);
/// Hard bounds on the minting loop, whatever happens to the rest of the test.
const LOOP_MAX_ITERATIONS: usize = 200;
const LOOP_MAX_TIME: Duration = Duration::from_secs(75);

struct Env {
    // Field order is drop order: the operator (which prints its log if the test failed)
    // goes first, the control plane last.
    operator: OperatorProcess,
    args: Vec<String>,
    coturn: Arc<Coturn>,
    _redis: RedisServer,
    secrets: Api<Secret>,
    events: Api<Event>,
    cp: ControlPlane,
    /// Logs of operator processes already replaced, checked for leaked secrets at the end.
    old_logs: Vec<String>,
}

impl Env {
    async fn start(interval: &str, margin_secs: u64) -> Env {
        let cp = ControlPlane::start().await.unwrap();
        cp.create_namespace(NS).await.unwrap();
        let redis = RedisServer::start().unwrap();
        let coturn = Arc::new(Coturn::start(&redis, REALM).unwrap());
        let client = cp.client().await.unwrap();
        let mut args = fast_args(NS);
        args.extend([
            format!("--turn-secret-name={SECRET_NAME}"),
            format!("--turn-realm={REALM}"),
            format!("--turn-rotation-interval={interval}"),
            format!("--turn-credential-ttl={TTL}s"),
            format!("--turn-propagation-margin={margin_secs}s"),
            format!("--turn-redis-url={}", redis.url()),
        ]);
        let operator = block_in_place(|| OperatorProcess::start(&cp, &args)).unwrap();
        Env {
            operator,
            args,
            coturn,
            _redis: redis,
            secrets: Api::namespaced(client.clone(), NS),
            events: Api::namespaced(client, NS),
            cp,
            old_logs: Vec::new(),
        }
    }

    /// Starts a fresh operator process in place of the (killed) current one.
    fn restart_operator(&mut self) {
        self.old_logs.push(read_log(&self.operator));
        let fresh = block_in_place(|| OperatorProcess::start(&self.cp, &self.args)).unwrap();
        self.operator = fresh;
    }

    /// Asks for a rotation the documented way: `kubectl annotate`.
    fn request_rotation(&self, value: &str) {
        let annotation = format!("switchboard.dev/rotate={value}");
        let out = block_in_place(|| {
            self.cp.kubectl([
                "-n",
                NS,
                "annotate",
                "secret",
                SECRET_NAME,
                annotation.as_str(),
                "--overwrite",
            ])
        })
        .unwrap();
        assert!(
            out.status.success(),
            "kubectl annotate failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    async fn state(&self) -> Option<RotationState> {
        read_state(&self.secrets).await
    }

    /// Waits until `check` holds for the Secret's state and returns that state.
    async fn wait_state(
        &self,
        what: &str,
        timeout: Duration,
        check: impl Fn(&RotationState) -> bool,
    ) -> RotationState {
        let check = &check;
        wait_for(what, timeout, || async move {
            match self.state().await {
                Some(state) if check(&state) => Ok(state),
                other => Err(format!("{other:?}")),
            }
        })
        .await
        .unwrap()
    }

    /// Waits until coturn's Redis set is exactly the state's valid secrets, and returns the
    /// state.
    async fn wait_converged(&self, what: &str, timeout: Duration) -> RotationState {
        wait_for(what, timeout, || async {
            let state = self.state().await.ok_or("no state yet")?;
            let redis = self.coturn.secrets_in_redis()?;
            if redis == valid(&state) {
                Ok(state)
            } else {
                Err(format!(
                    "Secret {state:?}, Redis holds {} secrets",
                    redis.len()
                ))
            }
        })
        .await
        .unwrap()
    }

    /// Events about the rotation Secret, as (reason, note).
    async fn secret_events(&self) -> Vec<(String, String)> {
        self.events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(SECRET_NAME))
            .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
            .collect()
    }

    /// Every secret in `seen` is absent from Events and from every operator log.
    async fn assert_no_secret_leaked(&self, seen: &BTreeSet<String>) {
        let events = self.secret_events().await;
        let mut texts: Vec<String> = events.iter().map(|(r, n)| format!("{r} {n}")).collect();
        texts.extend(self.old_logs.iter().cloned());
        texts.push(read_log(&self.operator));
        for secret in seen {
            for text in &texts {
                assert!(
                    !text.contains(secret.as_str()),
                    "secret {} leaked into an Event or a log",
                    SharedSecret::from_encoded(secret).unwrap().fingerprint()
                );
            }
        }
    }
}

async fn read_state(secrets: &Api<Secret>) -> Option<RotationState> {
    let secret = secrets.get_opt(SECRET_NAME).await.unwrap()?;
    let data = secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(key, value)| (key, value.0))
        .collect();
    RotationState::from_secret_data(&data).unwrap()
}

fn read_log(operator: &OperatorProcess) -> String {
    std::fs::read_to_string(operator.log_path()).unwrap_or_default()
}

fn valid(state: &RotationState) -> BTreeSet<String> {
    state
        .valid_secrets()
        .into_iter()
        .map(|s| s.expose().to_owned())
        .collect()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn sleep_until_unix(at: u64) {
    let target = UNIX_EPOCH + Duration::from_secs(at);
    if let Ok(left) = target.duration_since(SystemTime::now()) {
        tokio::time::sleep(left).await;
    }
}

fn mint_now(secret: &SharedSecret, user: &str) -> TurnCredential {
    mint(secret.as_bytes(), user, unix_now(), TTL).unwrap()
}

async fn allocate(coturn: &Coturn, credential: &TurnCredential) -> Allocation {
    coturn
        .allocate(&credential.username, &credential.password)
        .await
}

#[track_caller]
fn expect(what: &str, allocation: &Allocation, outcome: Outcome, coturn: &Coturn) {
    assert_eq!(
        allocation.outcome,
        outcome,
        "{what}: after {:?}, client said:\n{}\ncoturn log:\n{}",
        allocation.elapsed,
        allocation.output,
        coturn.log_tail(10)
    );
}

/// One allocation of the minting loop.
#[derive(Debug)]
struct Attempt {
    user: String,
    secret_fingerprint: String,
    /// Made half a TTL after minting, when the secret may have been rotated away.
    late: bool,
    allocation: Allocation,
}

/// Mints from whatever the Secret says `current` is, like a signaling pod, and allocates with
/// each credential twice: at once, and again half a TTL later. Runs until `stop`, bounded in
/// iterations and time; returns every attempt once all have finished.
async fn minting_loop(
    secrets: Api<Secret>,
    coturn: Arc<Coturn>,
    stop: Arc<AtomicBool>,
) -> Vec<Attempt> {
    let started = Instant::now();
    let mut attempts = JoinSet::new();
    for i in 0..LOOP_MAX_ITERATIONS {
        if stop.load(Ordering::Relaxed) || started.elapsed() > LOOP_MAX_TIME {
            break;
        }
        let state = read_state(&secrets)
            .await
            .expect("the Secret holds a state");
        let secret = state.current.secret;
        let user = format!("loop-{i}");
        let credential = mint_now(&secret, &user);
        for late in [false, true] {
            let (coturn, credential) = (coturn.clone(), credential.clone());
            let (user, secret_fingerprint) = (user.clone(), secret.fingerprint());
            attempts.spawn(async move {
                if late {
                    tokio::time::sleep(Duration::from_secs(TTL) / 2).await;
                }
                Attempt {
                    user,
                    secret_fingerprint,
                    late,
                    allocation: allocate(&coturn, &credential).await,
                }
            });
        }
        tokio::time::sleep(LOOP_PERIOD).await;
    }
    let mut done = attempts.join_all().await;
    done.sort_by_key(|a| (a.user.len(), a.user.clone(), a.late));
    done
}

/// A credential lives exactly as the rotation promises: the current secret's credentials
/// allocate, one minted before an (interval-driven) rotation keeps allocating until its own
/// expiry, the dropped secret's credentials are refused once the overlap is over, and expired
/// or wrong-secret credentials are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_accepted_exactly_while_the_rotation_promises() {
    switchboard_tests::require!(ControlPlane, Redis, Coturn);
    let started = Instant::now();
    // Margin 2 s: a secret stays valid TTL + 2 = 6 s after it is retired.
    let env = Env::start("3s", 2).await;
    let coturn = env.coturn.clone();
    let first = env
        .wait_converged(
            "the first secret in the Secret and Redis",
            Duration::from_secs(20),
        )
        .await;
    assert!(
        first.previous.is_none() && first.next.is_none(),
        "{first:?}"
    );
    let s0 = first.current.secret.clone();
    let t0 = first.current.current_since_unix;
    let mut seen = valid(&first);

    // Current, expired and wrong-secret credentials, while the rotation clock runs.
    let basics = {
        let coturn = coturn.clone();
        let current = mint_now(&s0, "current");
        let expired = mint(s0.as_bytes(), "expired", unix_now() - 10, 5).unwrap();
        let wrong = mint_now(&SharedSecret::generate().unwrap(), "wrong-secret");
        tokio::spawn(async move {
            tokio::join!(
                allocate(&coturn, &current),
                allocate(&coturn, &expired),
                allocate(&coturn, &wrong)
            )
        })
    };

    // Mint as late as possible before the rotation, due at t0 + 3.
    sleep_until_unix(t0 + 2).await;
    let pre = mint_now(&s0, "pre-rotation");
    let checked_at = unix_now();
    let state = env.state().await.unwrap();
    assert!(
        state.current.secret == s0,
        "{}",
        if checked_at < t0 + 3 {
            "rotated before the interval was up"
        } else {
            "the test reached the rotation too late to mint before it"
        }
    );

    let rotated = env
        .wait_state("the interval rotation", Duration::from_secs(10), |s| {
            s.current.secret != s0
        })
        .await;
    assert_eq!(
        rotated.previous.as_ref().map(|p| &p.secret),
        Some(&s0),
        "the old secret must stay as previous"
    );
    seen.extend(valid(&rotated));
    // Use the pre-rotation credential right after the rotation, just before it expires, and
    // just after; each on its own schedule, since a successful client run takes seconds.
    let at = |unix_millis: u64, then: bool| {
        let (coturn, pre, s0) = (coturn.clone(), pre.clone(), s0.clone());
        tokio::spawn(async move {
            let target = UNIX_EPOCH + Duration::from_millis(unix_millis);
            if let Ok(left) = target.duration_since(SystemTime::now()) {
                tokio::time::sleep(left).await;
            }
            // Whether the secret itself was still valid when the credential was used.
            let held = || coturn.secrets_in_redis().unwrap().contains(s0.expose());
            let before = held();
            let allocation = allocate(&coturn, &pre).await;
            (before && (!then || held()), allocation)
        })
    };
    let expiry_ms = pre.expires_at_unix * 1000;
    let right_after = at(0, false);
    let near_expiry = at(expiry_ms - 1_500, false);
    let after_expiry = at(expiry_ms + 1_000, true);

    let (current, expired, wrong) = basics.await.unwrap();
    expect("current secret", &current, Outcome::Allocated, &coturn);
    expect("expired credential", &expired, Outcome::Refused, &coturn);
    expect("wrong secret", &wrong, Outcome::Refused, &coturn);
    let (_, right_after) = right_after.await.unwrap();
    expect(
        "minted before the rotation, used after it",
        &right_after,
        Outcome::Allocated,
        &coturn,
    );
    let (_, near_expiry) = near_expiry.await.unwrap();
    expect(
        "minted before the rotation, used just before its expiry",
        &near_expiry,
        Outcome::Allocated,
        &coturn,
    );
    // Past its expiry the same credential is refused, although its secret is still valid.
    let (secret_still_valid, after_expiry) = after_expiry.await.unwrap();
    expect(
        "minted before the rotation, used after its expiry",
        &after_expiry,
        Outcome::Refused,
        &coturn,
    );
    assert!(
        secret_still_valid,
        "the old secret left Redis before the refused attempt ended: the overlap is too short \
         or the test too slow to tell expiry from removal"
    );

    // Once the overlap is over, the old secret is gone from both stores, and a fresh
    // credential made with it is refused while the current secret's work.
    let after_overlap = wait_for(
        "the old secret dropped from Secret and Redis",
        Duration::from_secs(20),
        || async {
            let state = env.state().await.ok_or("no state")?;
            let redis = coturn.secrets_in_redis()?;
            if !valid(&state).contains(s0.expose()) && !redis.contains(s0.expose()) {
                Ok(state)
            } else {
                Err(format!("{state:?}"))
            }
        },
    )
    .await
    .unwrap();
    let retired_at = rotated.previous.as_ref().unwrap().retired_at_unix;
    assert!(
        unix_now() >= retired_at + TTL + 2,
        "dropped before retired-at + TTL + margin"
    );
    seen.extend(valid(&after_overlap));
    let dropped = mint(s0.as_bytes(), "dropped", unix_now(), 60).unwrap();
    let fresh = mint_now(&after_overlap.current.secret, "after-overlap");
    let (dropped, fresh) = tokio::join!(allocate(&coturn, &dropped), allocate(&coturn, &fresh));
    expect("dropped secret", &dropped, Outcome::Refused, &coturn);
    expect(
        "current secret after the overlap",
        &fresh,
        Outcome::Allocated,
        &coturn,
    );

    // Visible in Events and metrics, never with a secret in them.
    let reasons: BTreeSet<String> = env
        .secret_events()
        .await
        .into_iter()
        .map(|(r, _)| r)
        .collect();
    for reason in [
        "TurnSecretInitialized",
        "TurnSecretRotated",
        "TurnSecretRetired",
    ] {
        assert!(
            reasons.contains(reason),
            "no {reason} Event; got {reasons:?}"
        );
    }
    let metrics = env.operator.metrics().unwrap();
    let rotations = metric(&metrics, "switchboard_operator_turn_rotations_total");
    assert!(rotations >= 1.0, "{metrics}");
    let age = metric(&metrics, "switchboard_operator_turn_secret_age_seconds");
    assert!((0.0..=30.0).contains(&age), "secret age {age}");
    seen.extend(valid(&env.state().await.unwrap()));
    env.assert_no_secret_leaked(&seen).await;
    println!("credential lifetimes test took {:?}", started.elapsed());
}

/// A loop minting from whatever the Secret says and allocating, like signaling, sees zero
/// failures across three forced rotations and an operator killed twice mid-rotation (once with
/// a secret staged, once inside the overlap) and restarted, and every rotation completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_rotations_and_a_killed_operator_never_fail_a_credential() {
    switchboard_tests::require!(ControlPlane, Redis, Coturn);
    let started = Instant::now();
    // A day-long interval: every rotation here is a forced one.
    let mut env = Env::start("24h", 1).await;
    let first = env
        .wait_converged(
            "the first secret in the Secret and Redis",
            Duration::from_secs(20),
        )
        .await;
    let mut seen = valid(&first);
    let mut currents = vec![first.current.secret.clone()];

    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(minting_loop(
        env.secrets.clone(),
        env.coturn.clone(),
        stop.clone(),
    ));

    for request in ["1", "2", "3"] {
        let before = currents.last().unwrap().clone();
        env.request_rotation(request);
        // Each promotion waits for the previous overlap (TTL + margin = 5 s) to end.
        let rotated = env
            .wait_state(
                &format!("forced rotation {request}"),
                Duration::from_secs(20),
                |s| {
                    s.rotate_request_handled.as_deref() == Some(request)
                        && s.next.is_none()
                        && s.current.secret != before
                },
            )
            .await;
        seen.extend(valid(&rotated));
        currents.push(rotated.current.secret.clone());
    }

    // Kill 1: the fourth rotation is staged (promotion waits for the third's overlap).
    env.request_rotation("4");
    let staged = env
        .wait_state("rotation 4 staged", Duration::from_secs(10), |s| {
            s.rotate_request_handled.as_deref() == Some("4") && s.next.is_some()
        })
        .await;
    env.operator.kill();
    let next = staged.next.clone().unwrap().secret;
    seen.extend(valid(&staged));
    let pushed_before_kill = env
        .coturn
        .secrets_in_redis()
        .unwrap()
        .contains(next.expose());
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let while_dead = env.state().await.unwrap();
    assert_eq!(
        while_dead, staged,
        "the Secret changed while no operator ran"
    );
    env.restart_operator();
    let promoted = env
        .wait_state(
            "rotation 4 completed after a restart",
            Duration::from_secs(20),
            |s| s.current.secret == next,
        )
        .await;
    seen.extend(valid(&promoted));
    currents.push(next.clone());
    let rotations_counted = wait_for("the rotation counted", Duration::from_secs(5), || async {
        let metrics = env.operator.metrics().map_err(|e| e.to_string())?;
        let count = metric(&metrics, "switchboard_operator_turn_rotations_total");
        if count >= 1.0 {
            Ok(count)
        } else {
            Err(metrics)
        }
    })
    .await
    .unwrap();

    // Kill 2: inside the overlap, with the old secret still in the state.
    env.operator.kill();
    assert!(promoted.previous.is_some(), "{promoted:?}");
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    env.restart_operator();
    env.wait_state(
        "the overlap of rotation 4 ended after a restart",
        Duration::from_secs(20),
        |s| s.previous.is_none(),
    )
    .await;
    let settled = env
        .wait_converged(
            "Redis holds only the current secret",
            Duration::from_secs(10),
        )
        .await;
    assert!(
        settled.previous.is_none() && settled.next.is_none(),
        "{settled:?}"
    );
    assert_eq!(settled.current.secret, next);
    seen.extend(valid(&settled));

    // Let the loop mint from the settled secret for a moment, then collect everything.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let attempts = load.await.unwrap();
    let failures: Vec<&Attempt> = attempts
        .iter()
        .filter(|a| a.allocation.outcome != Outcome::Allocated)
        .collect();
    let used: BTreeSet<&str> = attempts
        .iter()
        .map(|a| a.secret_fingerprint.as_str())
        .collect();
    println!(
        "rotation loop: {} allocations ({} half a TTL late) minted from {} secrets across 4 \
         rotations and 2 operator kills (staged secret already in Redis at kill 1: \
         {pushed_before_kill}; rotations counted after restart: {rotations_counted}); \
         failures: {}; took {:?}",
        attempts.len(),
        attempts.iter().filter(|a| a.late).count(),
        used.len(),
        failures.len(),
        started.elapsed(),
    );
    for failure in &failures {
        eprintln!(
            "FAILED {} (secret {}, late {}): {:?} after {:?}\n{}",
            failure.user,
            failure.secret_fingerprint,
            failure.late,
            failure.allocation.outcome,
            failure.allocation.elapsed,
            failure.allocation.output
        );
    }
    assert_eq!(failures.len(), 0, "allocations failed during rotation");
    assert!(
        attempts.len() >= 40,
        "the loop made only {} allocations",
        attempts.len()
    );
    let distinct: BTreeSet<String> = currents.iter().map(|s| s.fingerprint()).collect();
    assert_eq!(distinct.len(), 5, "expected five distinct current secrets");
    assert!(
        used.len() >= 5,
        "the loop minted from only {} of the 5 secrets",
        used.len()
    );
    let reasons: Vec<String> = env
        .secret_events()
        .await
        .into_iter()
        .map(|(r, _)| r)
        .collect();
    assert!(
        reasons.iter().filter(|r| *r == "TurnSecretRotated").count() >= 1,
        "{reasons:?}"
    );
    env.assert_no_secret_leaked(&seen).await;
}

/// The value of an unlabelled sample in Prometheus text.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            let (key, value) = line.split_once(' ')?;
            (key == name).then(|| value.trim().parse().ok()).flatten()
        })
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
}
