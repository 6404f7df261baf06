//! `switchboard-telemetry`: the one logging setup both binaries use, so an operator reading
//! the operator's and signaling's logs sees the same format, fields and level rules.
//!
//! It installs a global `tracing` subscriber and nothing else: no metrics (each binary owns
//! its `prometheus-client` registry) and no I/O beyond writing to stderr.

pub mod bounded;

use std::io::IsTerminal;

use clap::{Args, ValueEnum};
use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per event with the event's fields at the top level, for log pipelines.
    Json,
}

/// The logging options every binary takes.
#[derive(Debug, Clone, Copy, Args)]
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

/// Installs the global subscriber: levels from `RUST_LOG`, or `default_filter` when it is
/// unset or invalid (each binary knows which of its dependencies are too chatty at `info`).
///
/// Returns `false` when a subscriber was already installed (a second call, or a test harness
/// that set its own); the first one stays, since replacing it would lose its output.
pub fn init(format: LogFormat, default_filter: &str) -> bool {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        // Logs go to stderr, so stdout stays for what a command prints on purpose (a token,
        // a Room manifest).
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal, not in files or log pipelines.
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.try_init().is_ok(),
        LogFormat::Json => builder.json().flatten_event(true).try_init().is_ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        log: LogArgs,
    }

    #[test]
    fn log_args_parse_and_refuse_unknown_formats() {
        Cli::command().debug_assert();
        let json = Cli::try_parse_from(["x", "--log-format", "json"]).unwrap();
        assert_eq!(json.log.log_format, LogFormat::Json);
        let error = Cli::try_parse_from(["x", "--log-format", "yaml"]).unwrap_err();
        assert!(error.to_string().contains("yaml"), "{error}");
    }

    #[test]
    fn the_first_subscriber_stays() {
        assert!(init(LogFormat::Json, "info"), "first install");
        assert!(!init(LogFormat::Text, "info"), "second install is refused");
    }
}
