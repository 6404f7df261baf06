//! Tracing setup: the shared one (`switchboard-telemetry`), with the operator's default levels.

use crate::args::LogFormat;

/// Installs the global subscriber. Safe to call once; a second call is ignored.
pub fn init(format: LogFormat) {
    // kube's watcher logs every reconnect at info; its warnings are what matter here.
    switchboard_telemetry::init(format, "info,kube=warn");
}
