//! Schema fragments shared by both resources: the patterns and bounds that make the apiserver
//! refuse a bad object at `kubectl apply`, naming the field, instead of leaving the operator to
//! discover it later.

/// A DNS-label-like region name (`eu-west-1`, `us-east`).
pub const REGION_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// The longest region name accepted.
pub const REGION_MAX_LEN: u32 = 63;

/// A media URL: `https://`, `http://`, `wss://` or `ws://` followed by a host and an optional
/// path, with no whitespace.
pub const MEDIA_URL_PATTERN: &str = r"^(https?|wss?)://[^\s/?#]+([/?#]\S*)?$";
/// A health-check URL: only `http://` and `https://`, since the operator probes it with GET.
pub const HTTP_URL_PATTERN: &str = r"^https?://[^\s/?#]+([/?#]\S*)?$";
/// A TURN or STUN URI as WebRTC's `iceServers` accept it (RFC 7064 / RFC 7065).
pub const ICE_URL_PATTERN: &str = r"^(stuns?|turns?):[^\s]+$";
/// The longest URL accepted anywhere in a spec. Longer values are almost certainly mistakes
/// and would bloat every `joined` message that carries them.
pub const URL_MAX_LEN: u32 = 2048;
/// The most TURN/STUN URLs one SFU node may advertise.
pub const ICE_URLS_MAX: u32 = 16;

/// A Kubernetes object name (RFC 1123 subdomain), such as a Secret's.
pub const DNS_SUBDOMAIN_PATTERN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// The longest Kubernetes object name.
pub const DNS_SUBDOMAIN_MAX_LEN: u32 = 253;

/// The most participant slots one SFU node may declare.
pub const NODE_PARTICIPANTS_MAX: u32 = 1_000_000;
/// The most participants one room may reserve.
pub const ROOM_PARTICIPANTS_MAX: u32 = 10_000;
