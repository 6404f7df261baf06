//! Checks shared by the suites that carry media through real Janus (`browser_sfu`, `sfu_call`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use serde_json::Value;
use switchboard_tests::Janus;

/// Checks that every page decoded video from every other page's participant through `janus`:
/// the frame count rose over a second and the SFU's port of the selected candidate pair is in
/// `janus`'s RTP range.
pub fn assert_media_through(flow: &Value, ids: &[String], janus: &Janus, report: &Value) {
    for (i, me) in ids.iter().enumerate() {
        for other in ids.iter().filter(|p| *p != me) {
            let before = &flow["before"][i][other];
            let after = &flow["after"][i][other];
            assert_eq!(after["node"], janus.name(), "{me} <- {other}: {report:#}");
            let (first, last) = (
                before["frames"].as_u64().unwrap(),
                after["frames"].as_u64().unwrap(),
            );
            assert!(
                first > 0 && last > first,
                "{me} <- {other}: frames not rising through {}: {report:#}",
                janus.name()
            );
            let port = u16::try_from(after["port"].as_u64().unwrap()).unwrap();
            assert!(
                janus.owns_port(port),
                "{me} <- {other}: port {port} is not in {}'s range {:?}: {report:#}",
                janus.name(),
                janus.options().rtp_ports
            );
        }
    }
}
