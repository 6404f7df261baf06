//! Checks shared by the suites that carry media through real Janus (`browser_sfu`, `sfu_call`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use std::ops::RangeInclusive;

use serde_json::Value;
use switchboard_tests::Janus;

/// Checks that every page decoded video from every other page's participant through `janus`:
/// the frame count rose over a second and the SFU's port of the selected candidate pair is in
/// `janus`'s RTP range.
pub fn assert_media_through(flow: &Value, ids: &[String], janus: &Janus, report: &Value) {
    assert_media_through_node(flow, ids, janus.name(), &janus.options().rtp_ports, report);
}

/// [`assert_media_through`] for a Janus known by its node name and RTP range only (one the
/// test did not start itself).
pub fn assert_media_through_node(
    flow: &Value,
    ids: &[String],
    node: &str,
    rtp_ports: &RangeInclusive<u16>,
    report: &Value,
) {
    for (i, me) in ids.iter().enumerate() {
        for other in ids.iter().filter(|p| *p != me) {
            let before = &flow["before"][i][other];
            let after = &flow["after"][i][other];
            assert_eq!(after["node"], node, "{me} <- {other}: {report:#}");
            let (first, last) = (
                before["frames"].as_u64().unwrap(),
                after["frames"].as_u64().unwrap(),
            );
            assert!(
                first > 0 && last > first,
                "{me} <- {other}: frames not rising through {node}: {report:#}"
            );
            let port = u16::try_from(after["port"].as_u64().unwrap()).unwrap();
            assert!(
                rtp_ports.contains(&port),
                "{me} <- {other}: port {port} is not in {node}'s range {rtp_ports:?}: {report:#}"
            );
        }
    }
}
