//! One WebSocket connection, from the upgrade to the close.
//!
//! A join, followed from the socket to the reply: [`run`] splits the socket into a writer task
//! (draining the connection's bounded queue, sending pings) and the reader loop below. The
//! reader checks each frame (size, UTF-8, text only), the rate limit, and parses it with
//! [`crate::protocol::parse_client_message`]. A `join` goes to [`crate::hub::Hub::join`], which answers
//! the others with `participantJoined`; the joiner gets `joined` with the participants, its
//! ICE servers and resume token. Offers, answers and candidates go through [`crate::hub::Hub::relay`],
//! which resolves `to` inside the sender's room only.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc;

use crate::auth::JoinClaims;
use crate::hub::{Member, Outbound, participant};
use crate::ids::{ParticipantId, RoomId};
use crate::limits::{Admit, TokenBucket};
use crate::protocol::{
    ClientMessage, CloseCode, ErrorCode, LeaveReason, PROTOCOL_VERSION, ResumeToken, ServerMessage,
    parse_client_message,
};
use crate::rooms::ResolveError;
use crate::server::AppState;
use crate::store::{ParticipantEntry, StoreError};

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    if getrandom::fill(&mut buf).is_err() {
        // The OS RNG failing is not recoverable in a meaningful way; fall back to the clock so
        // ids stay unique per process even then.
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        return format!("{nanos:032x}");
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

fn close_message(code: CloseCode) -> Message {
    Message::Close(Some(CloseFrame {
        code: code.code(),
        reason: code.reason().into(),
    }))
}

/// The close code for a receive error, judged by the WebSocket library's message.
fn receive_error_close(error: &axum::Error) -> CloseCode {
    let text = error.to_string();
    if text.contains("too long") || text.contains("Space limit") {
        CloseCode::MessageTooBig
    } else if text.contains("UTF-8") || text.contains("utf-8") {
        CloseCode::InvalidPayload
    } else {
        CloseCode::InternalError
    }
}

struct Joined {
    room: RoomId,
    id: ParticipantId,
    /// Kept to re-register after the store lost it (a Redis restart): the state is rebuilt
    /// from the connections that are still here.
    entry: ParticipantEntry,
    max: u32,
    /// The room's SfuNode TURN URLs, for `iceServersRefresh`.
    turn_urls: Vec<String>,
}

/// Runs a connection until it closes.
pub async fn run(socket: WebSocket, state: Arc<AppState>, claims: JoinClaims) {
    let limits = state.limits.clone();
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::channel::<Outbound>(limits.send_queue.max(1));
    let kill = Arc::new(tokio::sync::Notify::new());

    // Writer: the only task that writes to the socket.
    let writer_kill = kill.clone();
    let ping_interval = limits.ping_interval;
    let writer = tokio::spawn(async move {
        let mut ping = tokio::time::interval(ping_interval);
        ping.tick().await;
        loop {
            tokio::select! {
                next = rx.recv() => match next {
                    Some(Outbound::Text(text)) => {
                        if sink.send(Message::Text(text.as_ref().into())).await.is_err() {
                            break;
                        }
                    }
                    Some(Outbound::Close(code)) => {
                        let _ = sink.send(close_message(code)).await;
                        break;
                    }
                    None => break,
                },
                _ = writer_kill.notified() => {
                    // A slow consumer: its queue is full, so close it without waiting on it.
                    let _ = tokio::time::timeout(Duration::from_secs(1), sink.send(close_message(CloseCode::PolicyViolation))).await;
                    break;
                }
                _ = ping.tick() => {
                    if sink.send(Message::Ping(Vec::new().into())).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = sink.close().await;
    });

    let mut bucket = TokenBucket::new(
        limits.rate_per_second,
        limits.rate_burst,
        limits.flood_strikes,
        Instant::now(),
    );
    let mut joined: Option<Joined> = None;
    let join_deadline = tokio::time::Instant::now() + limits.join_timeout;
    let mut last_seen = tokio::time::Instant::now();
    let mut refresh_at = tokio::time::Instant::now() + refresh_delay(state.ice.credential_ttl);
    let mut leave_reason = LeaveReason::ConnectionLost;
    let mut refresh =
        tokio::time::interval((state.store.participant_ttl() / 3).max(Duration::from_millis(100)));
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let reply = |message: ServerMessage| {
        let _ = tx.try_send(Outbound::Text(message.to_json().into()));
    };
    let mut we_closed = false;
    let mut close = |code: CloseCode| {
        we_closed = true;
        let _ = tx.try_send(Outbound::Close(code));
    };

    loop {
        let idle_deadline = last_seen + limits.idle_timeout;
        let frame = tokio::select! {
            frame = stream.next() => frame,
            _ = tokio::time::sleep_until(join_deadline), if joined.is_none() => {
                close(CloseCode::JoinTimeout);
                break;
            }
            _ = tokio::time::sleep_until(idle_deadline) => {
                close(CloseCode::PolicyViolation);
                break;
            }
            _ = tokio::time::sleep_until(refresh_at), if joined.is_some() => {
                // Fresh TURN credentials before the old ones expire: long calls keep working.
                let node_urls = joined.as_ref().map(|j| j.turn_urls.as_slice()).unwrap_or_default();
                reply(ServerMessage::IceServersRefresh { ice_servers: state.ice.servers_for(claims.user.as_str(), node_urls) });
                refresh_at = tokio::time::Instant::now() + refresh_delay(state.ice.credential_ttl);
                continue;
            }
            _ = refresh.tick(), if joined.is_some() => {
                if let Some(j) = &joined {
                    match state.store.refresh(&j.room, &j.id).await {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::info!(room = %j.room.as_str(), participant = %j.id.as_str(), "participant missing from the store; registering again");
                            let _ = state.store.join(&j.room, j.entry.clone(), j.max).await;
                        }
                        Err(error) => tracing::debug!(%error, "cannot refresh participant"),
                    }
                }
                continue;
            }
            _ = kill.notified() => break,
        };
        let Some(frame) = frame else { break };
        last_seen = tokio::time::Instant::now();
        let text = match frame {
            Ok(Message::Text(text)) => text,
            Ok(Message::Binary(_)) => {
                close(CloseCode::UnsupportedData);
                break;
            }
            Ok(Message::Close(_)) => {
                leave_reason = LeaveReason::Left;
                break;
            }
            Ok(Message::Ping(_) | Message::Pong(_)) => continue,
            Err(error) => {
                let code = receive_error_close(&error);
                tracing::debug!(%error, close = code.code(), "receive error");
                close(code);
                break;
            }
        };
        match bucket.admit(Instant::now()) {
            Admit::Yes => {}
            Admit::Refuse => {
                reply(ServerMessage::error(
                    ErrorCode::RateLimited,
                    "too many messages; slow down",
                    None,
                ));
                continue;
            }
            Admit::Close => {
                close(CloseCode::PolicyViolation);
                break;
            }
        }
        let message = match parse_client_message(text.as_str()) {
            Ok(message) => message,
            Err(error) => {
                reply(error.to_server_message());
                continue;
            }
        };
        let msg_ref = message.msg_ref().cloned();
        match (message, &joined) {
            (ClientMessage::Join { .. }, Some(_)) => {
                reply(ServerMessage::error(
                    ErrorCode::AlreadyJoined,
                    "this connection has already joined",
                    msg_ref,
                ));
            }
            (ClientMessage::Join { .. }, None) => {
                // The lookup future is boxed: kept inline, it would make every connection's
                // task as large as its biggest await, for the whole life of the connection.
                let (max, sfu, turn_urls) = match &state.rooms {
                    None => (state.limits.default_max_participants, None, Vec::new()),
                    Some(rooms) => {
                        match Box::pin(rooms.resolve(&claims.room, claims.region.as_ref())).await {
                            Ok(info) => (info.max_participants, info.sfu, info.turn_urls),
                            Err(error) => {
                                let code = match &error {
                                    ResolveError::NotFound(_) => ErrorCode::RoomNotFound,
                                    ResolveError::PlacementTimeout(_) => {
                                        ErrorCode::PlacementTimeout
                                    }
                                    ResolveError::Create { .. } => ErrorCode::Internal,
                                };
                                tracing::debug!(%error, "join refused");
                                reply(ServerMessage::error(code, error.to_string(), msg_ref));
                                continue;
                            }
                        }
                    }
                };
                let Ok(id) = ParticipantId::parse(&format!("p-{}", random_hex(8))) else {
                    break;
                };
                let entry = ParticipantEntry {
                    id: id.clone(),
                    user: claims.user.clone(),
                    name: claims.name.clone(),
                    pod: state.pod.clone(),
                };
                // The store admits within the room's limit across every pod and replaces an
                // older session of the same user; the hub then wires up this connection.
                let admitted = match state.store.join(&claims.room, entry.clone(), max).await {
                    Ok(admitted) => admitted,
                    Err(StoreError::RoomFull { max }) => {
                        reply(ServerMessage::error(
                            ErrorCode::RoomFull,
                            format!("the room is full ({max} participants)"),
                            msg_ref,
                        ));
                        continue;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "room state unavailable");
                        reply(ServerMessage::error(
                            ErrorCode::Internal,
                            "room state is unavailable; retry shortly",
                            msg_ref,
                        ));
                        continue;
                    }
                };
                let Ok(resume_token) = ResumeToken::parse(&format!("rt1.{}", random_hex(16)))
                else {
                    break;
                };
                let me = participant(id.clone(), claims.user.clone(), claims.name.clone());
                let mut member = Member::new(me, tx.clone());
                member.kill = kill.clone();
                member.resume_token = Some(resume_token.clone());
                if let Err(error) = state.hub.join(&claims.room, member, None) {
                    let _ = state.store.leave(&claims.room, &id).await;
                    reply(ServerMessage::error(
                        ErrorCode::RoomFull,
                        error.to_string(),
                        msg_ref,
                    ));
                    continue;
                }

                reply(ServerMessage::Joined {
                    v: PROTOCOL_VERSION,
                    participant_id: id.clone(),
                    room: claims.room.clone(),
                    participants: admitted
                        .participants
                        .into_iter()
                        .map(|p| participant(p.id, p.user, p.name))
                        .collect(),
                    sfu,
                    ice_servers: state.ice.servers_for(claims.user.as_str(), &turn_urls),
                    resume_token,
                    seq: 0,
                    resumed: false,
                    msg_ref,
                });
                tracing::debug!(room = %claims.room.as_str(), participant = %id.as_str(), user = %claims.user.as_str(), "joined");
                joined = Some(Joined {
                    room: claims.room.clone(),
                    id,
                    entry,
                    max,
                    turn_urls,
                });
            }
            (_, None) => {
                reply(ServerMessage::error(
                    ErrorCode::NotJoined,
                    "send join first",
                    msg_ref,
                ));
            }
            (ClientMessage::Offer { to, sdp, .. }, Some(j)) => {
                let from = j.id.clone();
                if state
                    .hub
                    .relay(&j.room, &to, |seq| ServerMessage::Offer { from, sdp, seq })
                    .is_err()
                {
                    reply(unknown(&to, msg_ref));
                }
            }
            (ClientMessage::Answer { to, sdp, .. }, Some(j)) => {
                let from = j.id.clone();
                if state
                    .hub
                    .relay(&j.room, &to, |seq| ServerMessage::Answer { from, sdp, seq })
                    .is_err()
                {
                    reply(unknown(&to, msg_ref));
                }
            }
            (ClientMessage::Candidate { to, candidate, .. }, Some(j)) => {
                let from = j.id.clone();
                if state
                    .hub
                    .relay(&j.room, &to, |seq| ServerMessage::Candidate {
                        from,
                        candidate,
                        seq,
                    })
                    .is_err()
                {
                    reply(unknown(&to, msg_ref));
                }
            }
            (ClientMessage::Leave { .. }, Some(_)) => {
                leave_reason = LeaveReason::Left;
                close(CloseCode::Normal);
                break;
            }
            (ClientMessage::Ping { .. }, Some(_)) => reply(ServerMessage::Pong { msg_ref }),
        }
    }

    if let Some(j) = joined {
        state.hub.leave(&j.room, &j.id, leave_reason);
        if let Err(error) = state.store.leave(&j.room, &j.id).await {
            // The entry expires on its own after the participant TTL.
            tracing::debug!(%error, "cannot remove participant from the store");
        }
    }
    if we_closed {
        // Finish the close handshake: read (and drop) what the client still sends until its
        // Close arrives, so the socket is not reset under a close frame it has not read yet.
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(Ok(frame)) = stream.next().await {
                if matches!(frame, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }
    drop(tx);
    let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
}

fn unknown(to: &ParticipantId, msg_ref: Option<crate::protocol::MsgRef>) -> ServerMessage {
    ServerMessage::error(
        ErrorCode::UnknownParticipant,
        format!("no participant {} in this room", to.as_str()),
        msg_ref,
    )
}

/// Refresh at 80% of the credential lifetime, so clients apply new credentials well before
/// the old ones expire.
fn refresh_delay(ttl: Duration) -> Duration {
    (ttl * 4 / 5).max(Duration::from_secs(1))
}
