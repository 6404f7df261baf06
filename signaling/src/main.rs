//! `switchboard-signaling` entry point: `serve` runs the server, `dev` runs everything in one
//! process with the demo page, `token` mints a join token.

use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::Parser;
use switchboard_signaling::admin_client::AdminClient;
use switchboard_signaling::auth::{AdminMintClaims, Hs256Signer, KeyError, MintClaims};
use switchboard_signaling::config::{Cli, Command, RoomArgs, RoomCommand, TokenArgs};

/// Levels when `RUST_LOG` is unset.
const DEFAULT_LOG_FILTER: &str = "info";

/// The signer for the first `KID=SECRET` of `keys`.
fn signer(keys: &[String]) -> Result<Hs256Signer, String> {
    let key = keys
        .first()
        .ok_or("no key: pass --key KID=SECRET or set SWITCHBOARD_JWT_HS256")?;
    let (kid, secret) = key.split_once('=').ok_or("--key must be KID=SECRET")?;
    Hs256Signer::new(Some(kid), secret.as_bytes()).map_err(|e| e.to_string())
}

fn token(args: &TokenArgs) -> Result<String, String> {
    let signer = signer(&args.keys)?;
    if args.admin {
        let claims = AdminMintClaims::new(
            &args.user,
            &args.admin_audience,
            SystemTime::now(),
            args.ttl,
        );
        return signer.mint_admin(&claims).map_err(|e| e.to_string());
    }
    let room = args.room.as_deref().ok_or("--room is required")?;
    let claims = MintClaims::parse(
        room,
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

/// Runs a `room` command against the server API and renders its answer for people.
async fn room_command(args: &RoomArgs) -> Result<String, String> {
    let token = match &args.token {
        Some(token) => token.clone(),
        None => {
            let claims = AdminMintClaims::new(
                "switchboard-cli",
                &args.audience,
                SystemTime::now(),
                Duration::from_secs(60),
            );
            signer(&args.keys)?
                .mint_admin(&claims)
                .map_err(|e| e.to_string())?
        }
    };
    let client = AdminClient::new(&args.url, &token).map_err(|e| e.to_string())?;
    let output = match &args.command {
        RoomCommand::List => {
            let rooms = client.rooms().await.map_err(|e| e.to_string())?;
            let mut out = String::from("ROOM\tPARTICIPANTS\n");
            for (room, count) in rooms {
                out.push_str(&format!("{room}\t{count}\n"));
            }
            out
        }
        RoomCommand::Participants { room } => {
            let participants = client.participants(room).await.map_err(|e| e.to_string())?;
            let mut out = String::from("ID\tUSER\tPOD\tJOINED AT (UNIX MS)\n");
            for p in participants {
                let joined = p.joined_at.map(|ms| ms.to_string()).unwrap_or_default();
                out.push_str(&format!("{}\t{}\t{}\t{joined}\n", p.id, p.user, p.pod));
            }
            out
        }
        RoomCommand::Kick { room, participant } => {
            client
                .kick(room, participant)
                .await
                .map_err(|e| e.to_string())?;
            format!("removed {participant} from {room}\n")
        }
        RoomCommand::End { room } => {
            let removed = client.end(room).await.map_err(|e| e.to_string())?;
            format!("ended {room}: {removed} participants removed\n")
        }
    };
    Ok(output)
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
        Command::Room(args) => match room_command(&args).await {
            Ok(output) => {
                print!("{output}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("switchboard-signaling room: {error}");
                ExitCode::FAILURE
            }
        },
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
