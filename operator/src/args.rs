//! Command-line and environment configuration. Every option has an environment name, so the
//! chart can set it without templating arguments.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args as ClapArgs, Parser};
use switchboard_placement::Strategy;
use switchboard_telemetry::bounded;

/// Places Switchboard Rooms on SfuNodes and keeps SfuNode health.
#[derive(Debug, Clone, Parser)]
#[command(name = "switchboard-operator", version, about)]
pub struct Args {
    #[command(flatten)]
    pub scope: ScopeArgs,
    #[command(flatten)]
    pub placement: PlacementArgs,
    #[command(flatten)]
    pub leader: LeaderArgs,
    #[command(flatten)]
    pub turn: TurnArgs,
    #[command(flatten)]
    pub http: HttpArgs,
    #[command(flatten)]
    pub log: LogArgs,
}

/// Which objects the operator watches.
#[derive(Debug, Clone, ClapArgs)]
pub struct ScopeArgs {
    /// The namespace whose SfuNodes and Rooms are managed.
    #[arg(long, env = "SWITCHBOARD_NAMESPACE", default_value = "default")]
    pub namespace: String,

    /// Manage SfuNodes and Rooms in every namespace. Rooms are still only placed on nodes of
    /// their own namespace.
    #[arg(long, env = "SWITCHBOARD_ALL_NAMESPACES")]
    pub all_namespaces: bool,
}

/// How rooms are placed and when nodes count as failed.
#[derive(Debug, Clone, ClapArgs)]
pub struct PlacementArgs {
    /// `LeastLoaded` spreads rooms; `Packed` fills the fullest node that fits first.
    #[arg(
        long,
        env = "SWITCHBOARD_PLACEMENT_STRATEGY",
        default_value = "LeastLoaded"
    )]
    pub strategy: Strategy,

    /// How long a node may be NotReady before its rooms are placed elsewhere.
    #[arg(long, env = "SWITCHBOARD_FAILOVER_GRACE", default_value = "10s", value_parser = bounded::duration(Duration::ZERO, Duration::from_secs(3600)))]
    pub failover_grace: Duration,

    /// How long a slot reservation on an SfuNode counts before the Room's own status must show
    /// it. Covers the lag of another operator replica's watch.
    #[arg(long, env = "SWITCHBOARD_RESERVATION_TTL", default_value = "10s", value_parser = bounded::duration(Duration::from_secs(1), Duration::from_secs(3600)))]
    pub reservation_ttl: Duration,

    /// How often node health (probes, heartbeats, grace periods) is evaluated.
    #[arg(long, env = "SWITCHBOARD_HEALTH_INTERVAL", default_value = "500ms", value_parser = bounded::duration(Duration::from_millis(50), Duration::from_secs(60)))]
    pub health_interval: Duration,

    /// The most rooms decided in one batch of the placement loop.
    #[arg(long = "placement-batch", env = "SWITCHBOARD_PLACEMENT_BATCH", default_value_t = 256, value_parser = bounded::number(1u32, 10_000))]
    pub batch_size: u32,
}

/// Leader election through a coordination.k8s.io Lease. Placement stays correct without it
/// (every placement is a conditional write); the lease only avoids wasted work.
#[derive(Debug, Clone, ClapArgs)]
pub struct LeaderArgs {
    /// Take part in leader election; only the leader reconciles. Set to false to run every
    /// replica as an active writer.
    #[arg(long, env = "SWITCHBOARD_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,

    /// Name of the Lease.
    #[arg(
        long,
        env = "SWITCHBOARD_LEASE_NAME",
        default_value = "switchboard-operator"
    )]
    pub lease_name: String,

    /// Namespace of the Lease; defaults to `--namespace`.
    #[arg(long, env = "SWITCHBOARD_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,

    /// Seconds a leader's lease stays valid without renewal.
    #[arg(long, env = "SWITCHBOARD_LEASE_DURATION_SECONDS", default_value_t = 15, value_parser = bounded::number(2u64, 300))]
    pub lease_duration_seconds: u64,

    /// This replica's identity in the Lease; defaults to the pod name or host name.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
}

/// TURN shared-secret rotation (see `docs/turn.md`). Off unless `--turn-secret-name` is set.
///
/// Durations take humantime syntax (`24h`, `90s`) and must be whole seconds: the rotation
/// state stores unix seconds.
#[derive(Debug, Clone, ClapArgs)]
pub struct TurnArgs {
    /// Name of the Secret, in `--namespace`, that the operator owns and keeps the TURN shared
    /// secrets in. Signaling mounts it and mints credentials with its `current` key.
    #[arg(long = "turn-secret-name", env = "SWITCHBOARD_TURN_SECRET_NAME")]
    pub secret_name: Option<String>,

    /// The TURN realm (coturn's `realm`); names the Redis set `turn/realm/<realm>/secret`.
    /// Required with `--turn-redis-url`.
    #[arg(long = "turn-realm", env = "SWITCHBOARD_TURN_REALM")]
    pub realm: Option<String>,

    /// Rotate the secret once it has been current this long.
    #[arg(
        long = "turn-rotation-interval",
        env = "SWITCHBOARD_TURN_ROTATION_INTERVAL",
        default_value = "24h",
        value_parser = parse_whole_seconds
    )]
    pub rotation_interval: Duration,

    /// The longest lifetime of a credential signaling may mint. A retired secret stays valid
    /// this long plus the propagation margin.
    #[arg(
        long = "turn-credential-ttl",
        env = "SWITCHBOARD_TURN_CREDENTIAL_TTL",
        default_value = "1h",
        value_parser = parse_whole_seconds
    )]
    pub credential_ttl: Duration,

    /// How late a signaling pod may see a new `current` (the kubelet's Secret volume sync,
    /// 60-90 s by default) plus the operator's own latency.
    #[arg(
        long = "turn-propagation-margin",
        env = "SWITCHBOARD_TURN_PROPAGATION_MARGIN",
        default_value = "120s",
        value_parser = parse_whole_seconds
    )]
    pub propagation_margin: Duration,

    /// coturn Redis user databases (`redis://[:password@]host:port/db`) to keep the set of
    /// valid secrets in, one per TURN server group; repeat the flag or separate with commas.
    /// Without any, the TURN servers must get the secrets some other way.
    #[arg(
        long = "turn-redis-url",
        env = "SWITCHBOARD_TURN_REDIS_URLS",
        value_delimiter = ','
    )]
    pub redis_urls: Vec<String>,
}

/// A humantime duration that is a whole number of seconds.
fn parse_whole_seconds(text: &str) -> Result<Duration, String> {
    // Zero passes here: the rotation policy refuses it at start with its own reason.
    // A year as humantime counts it (365.25 days), so the message says `1year`.
    let duration = bounded::duration(Duration::ZERO, Duration::from_secs(31_557_600))(text)?;
    if duration.subsec_nanos() != 0 {
        return Err(format!("{text:?} is not a whole number of seconds"));
    }
    Ok(duration)
}

/// The HTTP endpoint for metrics and probes.
#[derive(Debug, Clone, ClapArgs)]
pub struct HttpArgs {
    /// Address serving `/metrics`, `/healthz` and `/readyz`.
    #[arg(
        long,
        env = "SWITCHBOARD_OPERATOR_LISTEN",
        default_value = "0.0.0.0:8080"
    )]
    pub listen: SocketAddr,
}

/// Log output: the options every Switchboard binary shares.
pub use switchboard_telemetry::{LogArgs, LogFormat};

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn args_are_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn defaults_and_env_names() {
        let args = Args::try_parse_from([
            "switchboard-operator",
            "--strategy",
            "Packed",
            "--failover-grace",
            "3s",
        ])
        .unwrap();
        assert_eq!(args.placement.strategy, Strategy::Packed);
        assert_eq!(args.placement.failover_grace, Duration::from_secs(3));
        assert!(args.leader.leader_election);
        let bad =
            Args::try_parse_from(["switchboard-operator", "--strategy", "Random"]).unwrap_err();
        assert!(bad.to_string().contains("unknown strategy"), "{bad}");
    }

    #[test]
    fn turn_rotation_is_off_by_default_with_documented_defaults() {
        let args = Args::try_parse_from(["switchboard-operator"]).unwrap();
        assert_eq!(args.turn.secret_name, None);
        assert_eq!(args.turn.rotation_interval, Duration::from_secs(24 * 3600));
        assert_eq!(args.turn.credential_ttl, Duration::from_secs(3600));
        assert_eq!(args.turn.propagation_margin, Duration::from_secs(120));
        assert!(args.turn.redis_urls.is_empty());
    }

    #[test]
    fn turn_durations_go_down_to_seconds_and_urls_split_on_commas() {
        let args = Args::try_parse_from([
            "switchboard-operator",
            "--turn-secret-name=turn",
            "--turn-realm=example.org",
            "--turn-rotation-interval=3s",
            "--turn-credential-ttl=4s",
            "--turn-propagation-margin=0s",
            "--turn-redis-url=redis://a:6379/0,redis://b:6379/0",
            "--turn-redis-url=redis://c:6379/0",
        ])
        .unwrap();
        assert_eq!(args.turn.rotation_interval, Duration::from_secs(3));
        assert_eq!(args.turn.credential_ttl, Duration::from_secs(4));
        assert_eq!(args.turn.propagation_margin, Duration::ZERO);
        assert_eq!(args.turn.redis_urls.len(), 3);
    }

    #[test]
    fn turn_durations_must_be_whole_seconds() {
        let bad = Args::try_parse_from(["switchboard-operator", "--turn-credential-ttl=1500ms"])
            .unwrap_err();
        assert!(bad.to_string().contains("whole number of seconds"), "{bad}");
    }
}
