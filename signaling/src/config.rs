//! Command-line and environment configuration of the signaling server and its tools.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use switchboard_telemetry::bounded;
pub use switchboard_telemetry::{LogArgs, LogFormat};

/// Seconds, for the option bounds below.
const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Milliseconds, for the option bounds below.
const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

const HOUR: u64 = 3600;
const DAY: u64 = 24 * HOUR;

/// Switchboard's WebSocket signaling server.
#[derive(Debug, Parser)]
#[command(name = "switchboard-signaling", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve WebSocket signaling.
    Serve(Box<ServeArgs>),
    /// Mint a join token with an HS256 key, for testing and development.
    Token(TokenArgs),
    /// The server API from the command line: list rooms and participants, remove a
    /// participant, end a room (`docs/api.md`).
    Room(RoomArgs),
    /// Everything in one process for trying Switchboard out: in-memory state, SFU nodes from
    /// flags or a YAML file placed in-process, a generated signing key, and the demo page.
    Dev(Box<DevArgs>),
}

#[derive(Debug, Clone, Args)]
pub struct DevArgs {
    /// Address to serve the demo page, `/v1/ws` and the probes on.
    #[arg(long, env = "SWITCHBOARD_LISTEN", default_value = "127.0.0.1:8090")]
    pub listen: SocketAddr,
    /// An SFU node as `NAME=URL` (repeatable), in region `local` with room for 1,000.
    #[arg(long = "sfu", value_name = "NAME=URL")]
    pub sfu: Vec<String>,
    /// A YAML file of SfuNode objects, as for `kubectl apply` (repeatable).
    #[arg(long = "sfu-file", value_name = "PATH")]
    pub sfu_files: Vec<PathBuf>,
    #[command(flatten)]
    pub janus: LocalJanusArgs,
    #[command(flatten)]
    pub turn: TurnArgs,
    #[command(flatten)]
    pub sfu_tokens: SfuArgs,
    #[command(flatten)]
    pub limits: LimitArgs,
    /// How long a dropped connection can be resumed.
    #[arg(long, env = "SWITCHBOARD_PARTICIPANT_TTL", default_value = "10s", value_parser = bounded::duration(secs(1), secs(HOUR)))]
    pub participant_ttl: Duration,
    #[command(flatten)]
    pub log: LogArgs,
}

/// `dev --janus`: a Janus that dev mode starts and configures itself.
#[derive(Debug, Clone, Args)]
pub struct LocalJanusArgs {
    /// Start a local Janus (Debian: `apt-get install janus`) with generated configuration and
    /// secrets, and place rooms on it (as node `janus-local`).
    #[arg(long, env = "SWITCHBOARD_DEV_JANUS")]
    pub janus: bool,
    /// The Janus program to start.
    #[arg(long, env = "SWITCHBOARD_DEV_JANUS_BIN", default_value = "janus")]
    pub janus_bin: PathBuf,
    /// The address Janus's WebSocket, HTTP and admin transports listen on.
    #[arg(
        long,
        env = "SWITCHBOARD_DEV_JANUS_LISTEN_IP",
        default_value = "127.0.0.1"
    )]
    pub janus_listen_ip: std::net::Ipv4Addr,
    /// Gather media (ICE) candidates only on this address; by default every interface but
    /// loopback, which Janus always skips.
    #[arg(long, env = "SWITCHBOARD_DEV_JANUS_ICE_IP")]
    pub janus_ice_ip: Option<std::net::Ipv4Addr>,
    /// Janus's media ports, as `FIRST-LAST`.
    #[arg(long, env = "SWITCHBOARD_DEV_JANUS_RTP_PORTS", default_value = "20000-20999", value_parser = parse_port_range)]
    pub janus_rtp_ports: std::ops::RangeInclusive<u16>,
}

/// `FIRST-LAST`, both ports above 1023 and FIRST <= LAST.
fn parse_port_range(text: &str) -> Result<std::ops::RangeInclusive<u16>, String> {
    let bad =
        || format!("{text:?} is not a port range FIRST-LAST with 1024 <= FIRST <= LAST <= 65535");
    let (first, last) = text.split_once('-').ok_or_else(bad)?;
    let first: u16 = first.trim().parse().map_err(|_| bad())?;
    let last: u16 = last.trim().parse().map_err(|_| bad())?;
    if first < 1024 || first > last {
        return Err(bad());
    }
    Ok(first..=last)
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to serve `/v1/ws`, `/healthz`, `/readyz` and `/metrics` on.
    #[arg(long, env = "SWITCHBOARD_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub auth: AuthArgs,
    #[command(flatten)]
    pub turn: TurnArgs,
    #[command(flatten)]
    pub sfu_tokens: SfuArgs,
    #[command(flatten)]
    pub limits: LimitArgs,
    #[command(flatten)]
    pub kube: KubeArgs,
    #[command(flatten)]
    pub state: StateArgs,
    #[command(flatten)]
    pub admin: AdminArgs,
    #[command(flatten)]
    pub webhooks: WebhookArgs,
    #[command(flatten)]
    pub log: LogArgs,
    /// Also serve the demo page at `/` and the JavaScript client at `/switchboard.js`. The page
    /// then needs a join token in its URL (`?token=`).
    #[arg(long, env = "SWITCHBOARD_DEMO")]
    pub demo: bool,
}

/// The server API for the application's backend (`docs/api.md`). Admin tokens are verified
/// with the join-token keys (`--jwt-hs256`, `--jwt-public-key`).
#[derive(Debug, Clone, Args)]
pub struct AdminArgs {
    /// Address to serve the server API on (rooms, participants, kick, end); off when unset.
    /// Keep it off the public Ingress: it is for the application's backend.
    #[arg(long = "admin-addr", env = "SWITCHBOARD_ADMIN_ADDR")]
    pub admin_addr: Option<SocketAddr>,
    /// The `aud` admin tokens must carry; join tokens cannot carry it.
    #[arg(long = "admin-audience", env = "SWITCHBOARD_ADMIN_AUDIENCE", default_value = crate::auth::DEFAULT_ADMIN_AUDIENCE)]
    pub admin_audience: String,
}

/// Webhooks: room and participant events posted, signed, to the application's backend
/// (`docs/api.md`).
#[derive(Debug, Clone, Args)]
pub struct WebhookArgs {
    /// URLs every event is posted to, comma separated; no webhooks when empty.
    #[arg(
        long = "webhook-url",
        env = "SWITCHBOARD_WEBHOOK_URLS",
        value_delimiter = ','
    )]
    pub webhook_urls: Vec<String>,
    /// The signing key as `KID=SECRET` (the secret at least 32 bytes); required with URLs.
    #[arg(
        long = "webhook-key",
        env = "SWITCHBOARD_WEBHOOK_KEY",
        hide_env_values = true
    )]
    pub webhook_key: Option<String>,
    /// Events queued per URL while its receiver is slow or down; more are dropped (and
    /// counted), so a dead receiver never holds signaling up.
    #[arg(
        long = "webhook-queue",
        env = "SWITCHBOARD_WEBHOOK_QUEUE",
        default_value_t = 4096,
        value_parser = bounded::number::<usize>(1, 1_000_000)
    )]
    pub webhook_queue: usize,
    /// How long an event is retried (backoff from 250 ms to 5 s) before it is dropped.
    #[arg(long = "webhook-retry-for", env = "SWITCHBOARD_WEBHOOK_RETRY_FOR", default_value = "60s", value_parser = bounded::duration(secs(1), secs(DAY)))]
    pub webhook_retry_for: Duration,
    /// How long one delivery attempt may take.
    #[arg(long = "webhook-timeout", env = "SWITCHBOARD_WEBHOOK_TIMEOUT", default_value = "5s", value_parser = bounded::duration(ms(100), secs(60)))]
    pub webhook_timeout: Duration,
}

/// `switchboard-signaling room …`: the server API from the command line.
#[derive(Debug, Clone, Args)]
pub struct RoomArgs {
    #[command(subcommand)]
    pub command: RoomCommand,
    /// The server API's base URL (a signaling pod's `--admin-addr`).
    #[arg(
        long = "admin-url",
        env = "SWITCHBOARD_ADMIN_URL",
        default_value = "http://127.0.0.1:8444",
        global = true
    )]
    pub url: String,
    /// An admin token; without it, one is minted for a minute from `--key`.
    #[arg(long = "admin-token", env = "SWITCHBOARD_ADMIN_TOKEN", global = true)]
    pub token: Option<String>,
    /// The HS256 key as `KID=SECRET` to mint the admin token with; defaults to the first of
    /// SWITCHBOARD_JWT_HS256.
    #[arg(
        long = "key",
        env = "SWITCHBOARD_JWT_HS256",
        value_delimiter = ',',
        global = true
    )]
    pub keys: Vec<String>,
    /// The admin audience the server expects (`--admin-audience`).
    #[arg(long = "admin-audience", env = "SWITCHBOARD_ADMIN_AUDIENCE", default_value = crate::auth::DEFAULT_ADMIN_AUDIENCE, global = true)]
    pub audience: String,
}

#[derive(Debug, Clone, Subcommand)]
pub enum RoomCommand {
    /// Rooms with participants, and how many each has.
    List,
    /// Who is in a room: participant id, user, pod, when they joined.
    Participants { room: String },
    /// Removes a participant (closed with 4002 `kicked`; it cannot resume).
    Kick { room: String, participant: String },
    /// Ends a room's call (everyone closed with 4003 `room_deleted`) and deletes its Room.
    End { room: String },
}

/// Join-token verification keys. Each key pins its algorithm; the token's header never
/// chooses it.
#[derive(Debug, Clone, Args)]
pub struct AuthArgs {
    /// HS256 keys as `KID=SECRET` (the secret at least 32 bytes), comma separated.
    #[arg(
        long = "jwt-hs256",
        env = "SWITCHBOARD_JWT_HS256",
        value_delimiter = ','
    )]
    pub hs256: Vec<String>,
    /// Public keys as `KID=ALG=PATH` with ALG one of RS256, ES256, EdDSA and PATH a PEM file,
    /// comma separated.
    #[arg(
        long = "jwt-public-key",
        env = "SWITCHBOARD_JWT_PUBLIC_KEYS",
        value_delimiter = ','
    )]
    pub public_keys: Vec<String>,
    /// Required `aud`, when set.
    #[arg(long = "jwt-audience", env = "SWITCHBOARD_JWT_AUDIENCE")]
    pub audience: Option<String>,
    /// Required `iss`, when set.
    #[arg(long = "jwt-issuer", env = "SWITCHBOARD_JWT_ISSUER")]
    pub issuer: Option<String>,
    /// The longest lifetime a join token may have.
    #[arg(long = "jwt-max-lifetime", env = "SWITCHBOARD_JWT_MAX_LIFETIME", default_value = "24h", value_parser = bounded::duration(secs(10), secs(7 * DAY)))]
    pub max_lifetime: Duration,
    /// Clock skew tolerated on `exp`.
    #[arg(long = "jwt-leeway", env = "SWITCHBOARD_JWT_LEEWAY", default_value = "30s", value_parser = bounded::duration(secs(0), crate::auth::MAX_LEEWAY))]
    pub leeway: Duration,
}

/// ICE servers handed out in `joined`.
#[derive(Debug, Clone, Args)]
pub struct TurnArgs {
    /// STUN/TURN URLs, comma separated (for example `turn:turn.example.com:3478`).
    #[arg(long = "ice-urls", env = "SWITCHBOARD_ICE_URLS", value_delimiter = ',')]
    pub ice_urls: Vec<String>,
    /// The operator's TURN Secret (in `--namespace`); its `current` key is watched, so a
    /// rotation is in use within moments.
    #[arg(long = "turn-secret-name", env = "SWITCHBOARD_TURN_SECRET_NAME")]
    pub secret_name: Option<String>,
    /// A file holding the TURN shared secret (the `current` key of the operator's Secret,
    /// mounted as a volume). Re-read when it changes, so a rotation is picked up.
    #[arg(long = "turn-secret-file", env = "SWITCHBOARD_TURN_SECRET_FILE")]
    pub secret_file: Option<PathBuf>,
    /// Lifetime of minted TURN credentials; `iceServersRefresh` is sent before it ends.
    #[arg(long = "turn-credential-ttl", env = "SWITCHBOARD_TURN_CREDENTIAL_TTL", default_value = "1h", value_parser = bounded::duration(secs(2), secs(7 * DAY)))]
    pub credential_ttl: Duration,
}

/// The SFU credentials handed out in `joined.sfu`, `sfuReassigned` and `sfuRefresh`.
#[derive(Debug, Clone, Args)]
pub struct SfuArgs {
    /// Lifetime of the SFU tokens minted per participant (Janus signed tokens); `sfuRefresh`
    /// is sent at 2/3 of it. Between 2s and 24h.
    #[arg(long, env = "SWITCHBOARD_SFU_TOKEN_TTL", default_value = "10m", value_parser = parse_sfu_token_ttl)]
    pub sfu_token_ttl: Duration,
}

/// The shortest and longest `--sfu-token-ttl`: shorter would refresh faster than clients can
/// apply a token; longer would keep a leaked token useful for days.
pub const SFU_TOKEN_TTL_RANGE: (Duration, Duration) =
    (Duration::from_secs(2), Duration::from_secs(24 * 3600));

fn parse_sfu_token_ttl(text: &str) -> Result<Duration, String> {
    let (min, max) = SFU_TOKEN_TTL_RANGE;
    bounded::duration(min, max)(text)
}

/// Protection against bad or greedy clients.
#[derive(Debug, Clone, Args)]
pub struct LimitArgs {
    /// Largest message accepted; larger frames close the connection with 1009.
    #[arg(long, env = "SWITCHBOARD_MAX_MESSAGE_BYTES", default_value_t = 64 * 1024, value_parser = bounded::number::<usize>(1024, 16 * 1024 * 1024))]
    pub max_message_bytes: usize,
    /// Sustained messages per second allowed per connection.
    #[arg(long, env = "SWITCHBOARD_RATE_PER_SECOND", default_value_t = 50.0, value_parser = bounded::number(0.1f64, 1_000_000.0))]
    pub rate_per_second: f64,
    /// Burst allowed above the sustained rate.
    #[arg(long, env = "SWITCHBOARD_RATE_BURST", default_value_t = 100.0, value_parser = bounded::number(1.0f64, 1_000_000.0))]
    pub rate_burst: f64,
    /// Refused messages in a row after which a flooding connection is closed with 1008.
    #[arg(long, env = "SWITCHBOARD_FLOOD_STRIKES", default_value_t = 50, value_parser = bounded::number(1u32, 100_000))]
    pub flood_strikes: u32,
    /// Outgoing messages queued per connection before it is dropped as a slow consumer.
    #[arg(long, env = "SWITCHBOARD_SEND_QUEUE", default_value_t = 256, value_parser = bounded::number::<usize>(1, 65_536))]
    pub send_queue: usize,
    /// Interval of WebSocket pings.
    #[arg(long, env = "SWITCHBOARD_PING_INTERVAL", default_value = "15s", value_parser = bounded::duration(ms(100), secs(600)))]
    pub ping_interval: Duration,
    /// A connection silent (no message, no pong) this long is closed.
    #[arg(long, env = "SWITCHBOARD_IDLE_TIMEOUT", default_value = "45s", value_parser = bounded::duration(ms(200), secs(HOUR)))]
    pub idle_timeout: Duration,
    /// Time allowed between connecting and `join`.
    #[arg(long, env = "SWITCHBOARD_JOIN_TIMEOUT", default_value = "10s", value_parser = bounded::duration(ms(100), secs(600)))]
    pub join_timeout: Duration,
    /// On SIGTERM, how long clients get to move (they are told to reconnect at spread-out
    /// times within half of it) before remaining connections are dropped.
    #[arg(long, env = "SWITCHBOARD_SHUTDOWN_GRACE", default_value = "10s", value_parser = bounded::duration(secs(0), secs(HOUR)))]
    pub shutdown_grace: Duration,
    /// Time a client has to send its request headers; slower ones (slowloris) are cut off.
    #[arg(long, env = "SWITCHBOARD_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = bounded::duration(ms(100), secs(600)))]
    pub header_read_timeout: Duration,
    /// Participants per room when the Room sets no limit.
    #[arg(
        long,
        env = "SWITCHBOARD_DEFAULT_MAX_PARTICIPANTS",
        default_value_t = 50,
        value_parser = bounded::number(1u32, 100_000)
    )]
    pub default_max_participants: u32,
}

/// Where ephemeral room state lives.
#[derive(Debug, Clone, Args)]
pub struct StateArgs {
    /// Redis URL for room state shared by all signaling pods; without it, state is kept in
    /// this process only. With `--redis-cluster`, a comma-separated list of cluster nodes.
    #[arg(long, env = "SWITCHBOARD_REDIS_URL")]
    pub redis_url: Option<String>,
    /// `--redis-url` names Redis Cluster nodes: use hash-slot routing and sharded pub/sub
    /// (`SPUBLISH`/`SSUBSCRIBE`, Redis 7 or newer).
    #[arg(long, env = "SWITCHBOARD_REDIS_CLUSTER", requires = "redis_url")]
    pub redis_cluster: bool,
    /// How long a participant stays listed without a refresh (the server refreshes every
    /// third of it). It is also the resume window: a dropped connection can be resumed, on any
    /// pod, until then. A crashed pod's participants are announced as left
    /// (`connection_lost`) within 4/3 of it, about 13 s with the default.
    #[arg(long, env = "SWITCHBOARD_PARTICIPANT_TTL", default_value = "10s", value_parser = bounded::duration(secs(1), secs(HOUR)))]
    pub participant_ttl: Duration,
    /// Relayed messages kept per participant for a resume; a client that missed more gets
    /// `resume_failed` and joins afresh.
    #[arg(long, env = "SWITCHBOARD_MAILBOX_LEN", default_value_t = crate::store::DEFAULT_MAILBOX_LEN, value_parser = bounded::number(1u32, 100_000))]
    pub mailbox_len: u32,
    /// This process's name in the room state; defaults to the pod or host name.
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,
}

/// Rooms and placement from Kubernetes. Without `--namespace`, rooms exist only while people
/// are in them and `joined` carries no SFU.
#[derive(Debug, Clone, Args)]
pub struct KubeArgs {
    /// Namespace of the Room objects; turns on the Kubernetes integration.
    #[arg(long = "namespace", env = "SWITCHBOARD_NAMESPACE")]
    pub namespace: Option<String>,
    /// Create a Room on the first join instead of answering `room_not_found`.
    #[arg(long, env = "SWITCHBOARD_AUTO_CREATE")]
    pub auto_create: bool,
    /// `maxParticipants` of auto-created Rooms.
    #[arg(
        long,
        env = "SWITCHBOARD_AUTO_CREATE_MAX_PARTICIPANTS",
        default_value_t = 50,
        value_parser = bounded::number(1u32, 100_000)
    )]
    pub auto_create_max_participants: u32,
    /// `emptyTimeoutSeconds` of auto-created Rooms.
    #[arg(long, env = "SWITCHBOARD_AUTO_CREATE_EMPTY_TIMEOUT", default_value = "5m", value_parser = bounded::duration(secs(1), secs(30 * DAY)))]
    pub auto_create_empty_timeout: Duration,
    /// How long a join waits for the operator to place a new Room before `placement_timeout`.
    #[arg(long, env = "SWITCHBOARD_PLACEMENT_WAIT", default_value = "5s", value_parser = bounded::duration(ms(100), secs(600)))]
    pub placement_wait: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// The room a join token admits to.
    #[arg(long, required_unless_present = "admin")]
    pub room: Option<String>,
    /// The user (`sub`); for an admin token, who acts.
    #[arg(long)]
    pub user: String,
    /// Mint an admin token for the server API (`aud` the admin audience, `"admin": true`)
    /// instead of a join token.
    #[arg(long, conflicts_with_all = ["room", "name"])]
    pub admin: bool,
    /// The admin audience, with `--admin`.
    #[arg(long = "admin-audience", env = "SWITCHBOARD_ADMIN_AUDIENCE", default_value = crate::auth::DEFAULT_ADMIN_AUDIENCE)]
    pub admin_audience: String,
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long, default_value = "5m", value_parser = bounded::duration(secs(1), secs(7 * DAY)))]
    pub ttl: Duration,
    /// The HS256 key as `KID=SECRET`; defaults to the first of SWITCHBOARD_JWT_HS256.
    #[arg(long = "key", env = "SWITCHBOARD_JWT_HS256", value_delimiter = ',')]
    pub keys: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    /// `--janus-rtp-ports` takes `FIRST-LAST` above the privileged ports, and names itself
    /// when refused.
    #[test]
    fn janus_rtp_ports_are_a_sane_range() {
        let dev = |ports: &str| Cli::try_parse_from(["sig", "dev", "--janus-rtp-ports", ports]);
        for bad in ["20000", "20999-20000", "80-90", "1-70000", "a-b", ""] {
            let error = dev(bad).unwrap_err().to_string();
            assert!(error.contains("--janus-rtp-ports"), "{bad}: {error}");
            assert!(
                error.contains("1024 <= FIRST <= LAST <= 65535"),
                "{bad}: {error}"
            );
        }
        let Command::Dev(args) = dev("30000-30009").unwrap().command else {
            panic!("dev")
        };
        assert_eq!(args.janus.janus_rtp_ports, 30000..=30009);
        assert!(!args.janus.janus, "off unless asked for");
    }

    /// A zero or absurd SFU token lifetime is refused with a message naming the option.
    #[test]
    fn sfu_token_ttl_is_bounded() {
        let serve = |ttl: &str| {
            Cli::try_parse_from(["sig", "serve", "--jwt-hs256=k=x", "--sfu-token-ttl", ttl])
        };
        for bad in ["0s", "1s", "25h", "365days"] {
            let error = serve(bad).unwrap_err().to_string();
            assert!(error.contains("--sfu-token-ttl"), "{bad}: {error}");
            assert!(error.contains("between 2s and 1day"), "{bad}: {error}");
        }
        let error = serve("soon").unwrap_err().to_string();
        assert!(error.contains("--sfu-token-ttl"), "{error}");
        let Command::Serve(args) = serve("3s").unwrap().command else {
            panic!("serve")
        };
        assert_eq!(args.sfu_tokens.sfu_token_ttl, Duration::from_secs(3));
        let Command::Serve(args) = Cli::try_parse_from(["sig", "serve"]).unwrap().command else {
            panic!("serve")
        };
        assert_eq!(
            args.sfu_tokens.sfu_token_ttl,
            Duration::from_secs(600),
            "default"
        );
    }
}
