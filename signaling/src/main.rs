//! `switchboard-signaling` entry point: `serve` runs the server, `dev` runs everything in one
//! process with the demo page, `token` mints a join token.

use std::process::ExitCode;
use std::time::SystemTime;

use clap::Parser;
use switchboard_signaling::auth::{Hs256Signer, KeyError, MintClaims};
use switchboard_signaling::config::{Cli, Command, TokenArgs};

/// Levels when `RUST_LOG` is unset.
const DEFAULT_LOG_FILTER: &str = "info";

fn token(args: &TokenArgs) -> Result<String, String> {
    let key = args
        .keys
        .first()
        .ok_or("no key: pass --key KID=SECRET or set SWITCHBOARD_JWT_HS256")?;
    let (kid, secret) = key.split_once('=').ok_or("--key must be KID=SECRET")?;
    let signer = Hs256Signer::new(Some(kid), secret.as_bytes()).map_err(|e| e.to_string())?;
    let claims = MintClaims::parse(
        &args.room,
        &args.user,
        args.name.as_deref(),
        SystemTime::now(),
        args.ttl,
    )
    .map_err(|error| match error {
        // Named as the flag the user typed.
        KeyError::InvalidInput { field, source } => format!("--{field}: {source}"),
        error => error.to_string(),
    })?;
    signer.mint(&claims).map_err(|e| e.to_string())
}

#[tokio::main]
async fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Serve(args) => {
            switchboard_telemetry::init(args.log.log_format, DEFAULT_LOG_FILTER);
            match switchboard_signaling::serve::run(*args).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    tracing::error!(%error, "signaling stopped");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Dev(args) => {
            switchboard_telemetry::init(args.log.log_format, DEFAULT_LOG_FILTER);
            match switchboard_signaling::dev::run(*args).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    tracing::error!(%error, "dev mode stopped");
                    eprintln!("switchboard-signaling dev: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Token(args) => match token(&args) {
            Ok(token) => {
                println!("{token}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("switchboard-signaling token: {error}");
                ExitCode::FAILURE
            }
        },
    }
}
