//! `switchboard-signaling` entry point: `serve` runs the server, `dev` runs everything in one
//! process with the demo page, `token` mints a join token.

use std::process::ExitCode;
use std::time::SystemTime;

use clap::Parser;
use switchboard_signaling::auth::{Hs256Signer, MintClaims};
use switchboard_signaling::config::{Cli, Command, LogFormat, TokenArgs};
use switchboard_signaling::ids::{DisplayName, RoomId, UserId};
use tracing_subscriber::EnvFilter;

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

fn token(args: &TokenArgs) -> Result<String, String> {
    let key = args
        .keys
        .first()
        .ok_or("no key: pass --key KID=SECRET or set SWITCHBOARD_JWT_HS256")?;
    let (kid, secret) = key.split_once('=').ok_or("--key must be KID=SECRET")?;
    let signer = Hs256Signer::new(Some(kid), secret.as_bytes()).map_err(|e| e.to_string())?;
    let room = RoomId::parse(&args.room).map_err(|e| format!("--room: {e}"))?;
    let user = UserId::parse(&args.user).map_err(|e| format!("--user: {e}"))?;
    let mut claims = MintClaims::new(user, room, SystemTime::now(), args.ttl);
    if let Some(name) = &args.name {
        claims.name = Some(DisplayName::parse(name).map_err(|e| format!("--name: {e}"))?);
    }
    signer.mint(&claims).map_err(|e| e.to_string())
}

#[tokio::main]
async fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Serve(args) => {
            init_tracing(args.log_format);
            match switchboard_signaling::server::serve(*args).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    tracing::error!(%error, "signaling stopped");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Dev(args) => {
            init_tracing(args.log_format);
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
