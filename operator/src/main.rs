//! `switchboard-operator` entry point: parse configuration, start logging, run.

use clap::Parser;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let args = switchboard_operator::args::Args::parse();
    switchboard_operator::telemetry::init(args.log.log_format);
    match switchboard_operator::run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "operator stopped");
            ExitCode::FAILURE
        }
    }
}
