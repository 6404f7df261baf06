//! Peer address ranges a TURN relay must refuse, in the `start-end` form coturn wants.
//!
//! coturn's `denied-peer-ip` takes a single address or an inclusive `start-end` range, not
//! CIDR notation, so this module turns CIDRs into ranges. Without these lines a TURN server
//! running inside a cluster is an open proxy into it: any client with a credential could ask
//! it to relay to pods, Services, the node, or the cloud metadata endpoint.
//!
//! A CIDR with host bits set (`10.1.2.3/8`) is normalized by masking them off, the way the
//! kernel treats a route prefix, rather than refused: the range the author meant is clear and
//! refusing would only turn a harmless typo into a failed rollout.
//!
//! Pure string and integer arithmetic; no I/O.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerRangeError {
    #[error("{input:?} is an address without a /prefix; write /32 or /128 for a single host")]
    MissingPrefix { input: String },
    #[error("{input:?} does not start with an IPv4 or IPv6 address")]
    InvalidAddress { input: String },
    #[error("{input:?} has a prefix length that is not a plain decimal number")]
    InvalidPrefix { input: String },
    #[error("{input:?} has prefix length {prefix}, longer than {max} bits")]
    PrefixTooLong {
        input: String,
        prefix: u32,
        max: u32,
    },
}

impl PeerRangeError {
    /// Stable, low-cardinality label for metrics and Event reasons.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::MissingPrefix { .. } => "missing_prefix",
            Self::InvalidAddress { .. } => "invalid_address",
            Self::InvalidPrefix { .. } => "invalid_prefix",
            Self::PrefixTooLong { .. } => "prefix_too_long",
        }
    }
}

pub type Result<T, E = PeerRangeError> = std::result::Result<T, E>;

/// An inclusive address range within one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpRange {
    V4 { start: Ipv4Addr, end: Ipv4Addr },
    V6 { start: Ipv6Addr, end: Ipv6Addr },
}

impl IpRange {
    pub fn start(&self) -> IpAddr {
        match self {
            Self::V4 { start, .. } => IpAddr::V4(*start),
            Self::V6 { start, .. } => IpAddr::V6(*start),
        }
    }

    pub fn end(&self) -> IpAddr {
        match self {
            Self::V4 { end, .. } => IpAddr::V4(*end),
            Self::V6 { end, .. } => IpAddr::V6(*end),
        }
    }

    /// Whether `addr` lies in the range. Addresses of the other family never do: coturn
    /// compares IPv4-mapped IPv6 peers against IPv6 ranges, which is why
    /// [`DEFAULT_DENIED_CIDRS`] denies `::ffff:0:0/96` explicitly.
    pub fn contains(&self, addr: IpAddr) -> bool {
        match (self, addr) {
            (Self::V4 { start, end }, IpAddr::V4(a)) => (*start..=*end).contains(&a),
            (Self::V6 { start, end }, IpAddr::V6(a)) => (*start..=*end).contains(&a),
            _ => false,
        }
    }
}

/// `start-end`, each address in its canonical std form (RFC 5952 for IPv6), which is what
/// coturn's `denied-peer-ip` parses. IPv6 text never contains `-`, so the split is unambiguous.
impl fmt::Display for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start(), self.end())
    }
}

/// Ranges a TURN server inside a Kubernetes cluster must never relay to, whatever the
/// cluster. Add the cluster's own pod, Service and node CIDRs on top (they are often inside
/// these, but not always, e.g. clusters that use public or CGNAT space for pods).
pub const DEFAULT_DENIED_CIDRS: &[&str] = &[
    // "This network" (RFC 1122); 0.0.0.0 reaches local listeners on many stacks.
    "0.0.0.0/8",
    // RFC 1918 private space: pod, Service and node networks usually live here.
    "10.0.0.0/8",
    // Shared address space (RFC 6598): carrier NAT, and the pod or node range of some clouds.
    "100.64.0.0/10",
    // Loopback: the TURN server's own admin/metrics ports and co-located sidecars.
    "127.0.0.0/8",
    // Link-local, including cloud metadata services at 169.254.169.254.
    "169.254.0.0/16",
    // RFC 1918 private space.
    "172.16.0.0/12",
    // IETF protocol assignments (RFC 6890), e.g. DS-Lite and NAT64 discovery addresses.
    "192.0.0.0/24",
    // RFC 1918 private space.
    "192.168.0.0/16",
    // Benchmarking (RFC 2544); sometimes used for internal networks.
    "198.18.0.0/15",
    // Multicast: a relay must not fan traffic out to a group.
    "224.0.0.0/4",
    // Reserved (RFC 1112), never a legitimate peer.
    "240.0.0.0/4",
    // Limited broadcast. Already inside 240.0.0.0/4; listed so nobody has to check that.
    "255.255.255.255/32",
    // IPv6 unspecified address, the IPv6 twin of 0.0.0.0.
    "::/128",
    // IPv6 loopback.
    "::1/128",
    // IPv4-mapped IPv6: ::ffff:10.0.0.1 would reach 10.0.0.1 past the IPv4 lines above.
    "::ffff:0:0/96",
    // NAT64 well-known prefix (RFC 6052): 64:ff9b::a00:1 reaches 10.0.0.1 through a NAT64.
    "64:ff9b::/96",
    // NAT64 local-use prefix (RFC 8215), same bypass on networks that use it.
    "64:ff9b:1::/48",
    // Teredo (RFC 4380) and 6to4 (RFC 3056) embed IPv4 addresses a relay could reach
    // through a tunnel; both are obsolete, so denying them costs nothing.
    "2001::/32",
    "2002::/16",
    // Unique local addresses (RFC 4193): IPv6 pod and Service ranges usually live here.
    "fc00::/7",
    // IPv6 link-local.
    "fe80::/10",
    // IPv6 multicast.
    "ff00::/8",
];

/// Parses `addr/prefix` into the inclusive range it covers, masking any host bits.
pub fn cidr_to_range(cidr: &str) -> Result<IpRange> {
    let Some((addr, prefix)) = cidr.split_once('/') else {
        return Err(if cidr.parse::<IpAddr>().is_ok() {
            PeerRangeError::MissingPrefix {
                input: cidr.to_owned(),
            }
        } else {
            PeerRangeError::InvalidAddress {
                input: cidr.to_owned(),
            }
        });
    };
    let addr: IpAddr = addr.parse().map_err(|_| PeerRangeError::InvalidAddress {
        input: cidr.to_owned(),
    })?;
    // u32::from_str would accept "+8"; the longest valid prefix has three digits.
    if prefix.is_empty() || prefix.len() > 3 || !prefix.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PeerRangeError::InvalidPrefix {
            input: cidr.to_owned(),
        });
    }
    let prefix: u32 = prefix.parse().map_err(|_| PeerRangeError::InvalidPrefix {
        input: cidr.to_owned(),
    })?;
    let max = match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    };
    if prefix > max {
        return Err(PeerRangeError::PrefixTooLong {
            input: cidr.to_owned(),
            prefix,
            max,
        });
    }
    Ok(match addr {
        IpAddr::V4(a) => {
            // checked_shr: a /0 shifts by the full width, which plain `>>` forbids.
            let host = u32::MAX.checked_shr(prefix).unwrap_or(0);
            let start = u32::from(a) & !host;
            IpRange::V4 {
                start: Ipv4Addr::from(start),
                end: Ipv4Addr::from(start | host),
            }
        }
        IpAddr::V6(a) => {
            let host = u128::MAX.checked_shr(prefix).unwrap_or(0);
            let start = u128::from(a) & !host;
            IpRange::V6 {
                start: Ipv6Addr::from(start),
                end: Ipv6Addr::from(start | host),
            }
        }
    })
}

/// One `denied-peer-ip=start-end` line per CIDR, in order, for coturn's configuration file.
pub fn coturn_denied_peer_lines(cidrs: &[&str]) -> Result<Vec<String>> {
    cidrs
        .iter()
        .map(|cidr| cidr_to_range(cidr).map(|range| format!("denied-peer-ip={range}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn range(cidr: &str) -> String {
        cidr_to_range(cidr).unwrap().to_string()
    }

    #[test]
    fn known_ranges() {
        assert_eq!(range("10.0.0.0/8"), "10.0.0.0-10.255.255.255");
        assert_eq!(range("100.64.0.0/10"), "100.64.0.0-100.127.255.255");
        assert_eq!(range("172.16.0.0/12"), "172.16.0.0-172.31.255.255");
        assert_eq!(
            range("255.255.255.255/32"),
            "255.255.255.255-255.255.255.255"
        );
        assert_eq!(range("0.0.0.0/0"), "0.0.0.0-255.255.255.255");
        assert_eq!(range("::1/128"), "::1-::1");
        assert_eq!(
            range("fc00::/7"),
            "fc00::-fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
        );
        assert_eq!(
            range("fe80::/10"),
            "fe80::-febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
        );
        assert_eq!(
            range("::ffff:0:0/96"),
            "::ffff:0.0.0.0-::ffff:255.255.255.255"
        );
        assert_eq!(range("64:ff9b::/96"), "64:ff9b::-64:ff9b::ffff:ffff");
        assert_eq!(range("::/0"), "::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff");
    }

    #[test]
    fn host_bits_are_masked() {
        assert_eq!(range("10.1.2.3/8"), "10.0.0.0-10.255.255.255");
        assert_eq!(
            range("2001:db8::1/32"),
            "2001:db8::-2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"
        );
    }

    #[test]
    fn bad_input_gives_typed_errors() {
        let cases: &[(&str, &str)] = &[
            ("10.0.0.0/33", "prefix_too_long"),
            ("::/129", "prefix_too_long"),
            ("10.0.0.0/999", "prefix_too_long"),
            ("banana", "invalid_address"),
            ("banana/8", "invalid_address"),
            ("", "invalid_address"),
            ("/8", "invalid_address"),
            (" 10.0.0.0/8", "invalid_address"),
            ("fe80::1%eth0/64", "invalid_address"),
            ("10.0.0.0", "missing_prefix"),
            ("::1", "missing_prefix"),
            ("10.0.0.0/-1", "invalid_prefix"),
            ("10.0.0.0/+8", "invalid_prefix"),
            ("10.0.0.0/", "invalid_prefix"),
            ("10.0.0.0/8/9", "invalid_prefix"),
            ("10.0.0.0/8 ", "invalid_prefix"),
            ("10.0.0.0/1000", "invalid_prefix"),
        ];
        for (input, label) in cases {
            let err = cidr_to_range(input).unwrap_err();
            assert_eq!(err.metric_label(), *label, "{input}: {err}");
        }
        assert_eq!(
            cidr_to_range("10.0.0.0/33"),
            Err(PeerRangeError::PrefixTooLong {
                input: "10.0.0.0/33".into(),
                prefix: 33,
                max: 32
            })
        );
    }

    #[test]
    fn defaults_all_parse_and_deny_what_matters() {
        let ranges: Vec<IpRange> = DEFAULT_DENIED_CIDRS
            .iter()
            .map(|c| cidr_to_range(c).unwrap())
            .collect();
        let denied = |addr: &str| {
            let addr: IpAddr = addr.parse().unwrap();
            ranges.iter().any(|r| r.contains(addr))
        };
        for addr in [
            "0.0.0.0",
            "10.96.0.1",
            "100.64.0.10",
            "127.0.0.1",
            "169.254.169.254",
            "172.17.0.1",
            "192.168.1.1",
            "224.0.0.251",
            "255.255.255.255",
            "::",
            "::1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
            "fd00::1",
            "fe80::1",
            "ff02::1",
        ] {
            assert!(denied(addr), "{addr} must be denied");
        }
        for addr in ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "2a00:1450::1"] {
            assert!(!denied(addr), "{addr} must stay reachable");
        }
    }

    #[test]
    fn coturn_lines_have_the_config_syntax() {
        let lines = coturn_denied_peer_lines(&["10.0.0.0/8", "::1/128"]).unwrap();
        assert_eq!(
            lines,
            [
                "denied-peer-ip=10.0.0.0-10.255.255.255",
                "denied-peer-ip=::1-::1"
            ]
        );
        assert!(coturn_denied_peer_lines(&["10.0.0.0/8", "nope"]).is_err());
        assert_eq!(
            coturn_denied_peer_lines(DEFAULT_DENIED_CIDRS)
                .unwrap()
                .len(),
            DEFAULT_DENIED_CIDRS.len()
        );
    }

    /// The mask of the top `prefix` bits of a `bits`-wide address, computed without shifts so
    /// the property tests do not share the implementation's arithmetic.
    fn top_bits(bits: u32, prefix: u32) -> u128 {
        (0..prefix).fold(0u128, |mask, i| mask | (1u128 << (bits - 1 - i)))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// IPv4: start has host bits zero, end has them one, membership equals the mask match,
        /// and the range holds exactly 2^(32-prefix) addresses.
        #[test]
        fn v4_range_matches_mask(addr in any::<u32>(), prefix in 0u32..=32, probe in any::<u32>()) {
            let r = cidr_to_range(&format!("{}/{prefix}", Ipv4Addr::from(addr))).unwrap();
            let IpRange::V4 { start, end } = r else { panic!("family changed") };
            let (start, end) = (u32::from(start), u32::from(end));
            let mask = top_bits(32, prefix) as u32;
            prop_assert!(start <= end);
            prop_assert_eq!(start & !mask, 0);
            prop_assert_eq!(end & !mask, !mask);
            prop_assert_eq!(start & mask, addr & mask);
            prop_assert_eq!(u64::from(end - start) + 1, 1u64 << (32 - prefix));
            for p in [probe, start, end, start.wrapping_sub(1), end.wrapping_add(1)] {
                let inside = r.contains(IpAddr::V4(Ipv4Addr::from(p)));
                prop_assert_eq!(inside, p & mask == addr & mask, "probe {}", Ipv4Addr::from(p));
            }
        }

        /// IPv6: the same four properties over 128 bits.
        #[test]
        fn v6_range_matches_mask(addr in any::<u128>(), prefix in 0u32..=128, probe in any::<u128>()) {
            let r = cidr_to_range(&format!("{}/{prefix}", Ipv6Addr::from(addr))).unwrap();
            let IpRange::V6 { start, end } = r else { panic!("family changed") };
            let (start, end) = (u128::from(start), u128::from(end));
            let mask = top_bits(128, prefix);
            prop_assert!(start <= end);
            prop_assert_eq!(start & !mask, 0);
            prop_assert_eq!(end & !mask, !mask);
            prop_assert_eq!(start & mask, addr & mask);
            // Size 2^(128-prefix), written as end - start = 2^(128-prefix) - 1 so /0 fits.
            let expected = if prefix == 0 { u128::MAX } else { (1u128 << (128 - prefix)) - 1 };
            prop_assert_eq!(end - start, expected);
            for p in [probe, start, end, start.wrapping_sub(1), end.wrapping_add(1)] {
                let inside = r.contains(IpAddr::V6(Ipv6Addr::from(p)));
                prop_assert_eq!(inside, p & mask == addr & mask, "probe {}", Ipv6Addr::from(p));
            }
        }

        /// Arbitrary text never panics; it parses or yields a typed error.
        #[test]
        fn arbitrary_text_never_panics(s in "\\PC{0,48}") {
            let _ = cidr_to_range(&s);
        }

        /// Display output parses back as two addresses of the right family.
        #[test]
        fn display_roundtrips(addr in any::<u128>(), prefix in 0u32..=128) {
            let r = cidr_to_range(&format!("{}/{prefix}", Ipv6Addr::from(addr))).unwrap();
            let text = r.to_string();
            let (a, b) = text.split_once('-').unwrap();
            prop_assert_eq!(a.parse::<IpAddr>().unwrap(), r.start());
            prop_assert_eq!(b.parse::<IpAddr>().unwrap(), r.end());
        }
    }
}
