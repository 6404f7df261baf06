//! Command-line and environment configuration. Every option has an environment name, so the
//! chart can set it without templating arguments.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args as ClapArgs, Parser, ValueEnum};
use switchboard_placement::Strategy;

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
    #[arg(long, env = "SWITCHBOARD_FAILOVER_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub failover_grace: Duration,

    /// How long a slot reservation on an SfuNode counts before the Room's own status must show
    /// it. Covers the lag of another operator replica's watch.
    #[arg(long, env = "SWITCHBOARD_RESERVATION_TTL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub reservation_ttl: Duration,

    /// How often node health (probes, heartbeats, grace periods) is evaluated.
    #[arg(long, env = "SWITCHBOARD_HEALTH_INTERVAL", default_value = "500ms", value_parser = humantime::parse_duration)]
    pub health_interval: Duration,

    /// The most rooms decided in one batch of the placement loop.
    #[arg(long, env = "SWITCHBOARD_PLACEMENT_BATCH", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=10_000))]
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
    #[arg(long, env = "SWITCHBOARD_LEASE_DURATION_SECONDS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(2..=300))]
    pub lease_duration_seconds: u64,

    /// This replica's identity in the Lease; defaults to the pod name or host name.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
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

/// Log output.
#[derive(Debug, Clone, ClapArgs)]
pub struct LogArgs {
    /// `text` for people, `json` for log pipelines. Levels come from `RUST_LOG`.
    #[arg(
        long,
        env = "SWITCHBOARD_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

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
}
