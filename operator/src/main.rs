//! `switchboard-operator` entry point: parse configuration, start logging, run until SIGTERM.

use clap::Parser;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let args = switchboard_operator::args::Args::parse();
    switchboard_operator::telemetry::init(args.log.log_format);
    let result = match switchboard_operator::shutdown_signal() {
        Ok(shutdown) => switchboard_operator::run(args, shutdown).await,
        Err(error) => Err(error),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "operator stopped");
            ExitCode::FAILURE
        }
    }
}
