//! One WebSocket connection, from the upgrade to the close.
//!
//! A join, followed from the socket to the reply: [`run`] starts one task per connection
//! ([`connection_loop`]), which waits on the socket, its bounded outgoing queue and one timer
//! for all its deadlines (pings included). It writes what is queued, and checks each incoming
//! frame (size, UTF-8, text only), the rate limit, and parses it with
//! [`crate::protocol::parse_client_message`]. A `join` goes to [`join`]: the Room's placement
//! from [`crate::rooms::RoomSource::resolve`], then [`crate::store::RoomStore::join`], which admits the participant
//! and tells the others (`participantJoined`, on any pod); the joiner gets `joined` with the
//! participants, its ICE servers and resume token. Offers, answers and candidates go through
//! [`crate::store::RoomStore::relay`], which resolves `to` inside the sender's room only and
//! delivers to the pod holding the target, whose [`crate::hub::Hub`] puts it on the socket.

use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::future::{self, Either, OptionFuture};
use futures::{FutureExt, SinkExt, StreamExt};

use crate::auth::JoinClaims;
use crate::hub::{Member, Outbound, SessionGuard, SessionSignal};
use crate::ids::{ParticipantId, RoomId};
use crate::limits::{Admit, TokenBucket};
use crate::metrics::ReasonLabel;
use crate::protocol::{
    ClientMessage, CloseCode, ErrorCode, MsgRef, PROTOCOL_VERSION, Resume, ResumeToken,
    ServerMessage, parse_client_message,
};
use crate::rooms::{ResolveError, SfuRoute};
use crate::state::AppState;
use crate::store::{ParticipantEntry, REBUILD_WINDOW, ResumeRequest, StoreError};

fn close_message(code: CloseCode) -> Message {
    Message::Close(Some(CloseFrame {
        code: code.code(),
        reason: code.reason().into(),
    }))
}

struct Joined {
    room: RoomId,
    /// The participant as stored, with this session's resume token; kept to restore it after
    /// the store lost it (a Redis restart): the state is rebuilt from the connections that
    /// are still here. Shared with this connection's entry in the hub.
    entry: Arc<ParticipantEntry>,
    /// The room's SfuNode TURN URLs, for `iceServersRefresh`.
    turn_urls: Vec<String>,
    /// The room's SFU at join time, when its tokens need `sfuRefresh`.
    sfu: Option<SfuRoute>,
}

impl Joined {
    fn id(&self) -> &ParticipantId {
        &self.entry.id
    }

    fn session(&self) -> Option<&ResumeToken> {
        self.entry.resume.as_ref()
    }
}

/// A fresh resume token for participant `id`. The id rides in the token so a reconnecting
/// client can be subscribed to its channel before the store checks the token.
fn new_resume_token(id: &ParticipantId) -> Option<ResumeToken> {
    ResumeToken::parse(&format!(
        "rt1.{}.{}",
        crate::ids::random_hex(16),
        id.as_str()
    ))
    .ok()
}

/// The participant a resume token names.
fn token_participant(token: &ResumeToken) -> Option<ParticipantId> {
    let rest = token.as_str().strip_prefix("rt1.")?;
    let (_, id) = rest.split_once('.')?;
    ParticipantId::parse(id).ok()
}

/// Why a join or resume did not happen: the `error` to send back, and its code for metrics.
struct Refused {
    code: ErrorCode,
    message: ServerMessage,
}

impl Refused {
    fn new(code: ErrorCode, message: impl Into<String>, msg_ref: Option<MsgRef>) -> Self {
        Refused {
            code,
            message: ServerMessage::error(code, message, msg_ref),
        }
    }
}

/// Everything a join needs from the connection.
struct Joining<'a> {
    state: &'a Arc<AppState>,
    claims: &'a JoinClaims,
    signal: &'a Arc<SessionSignal>,
    resume: Option<Resume>,
    msg_ref: Option<MsgRef>,
}

/// A join, from the room lookup to `joined`: looks the Room up (or creates it), registers the
/// connection with the hub (holding live messages back), subscribes to the participant's
/// channel, enters the room in the store (or resumes there), answers `joined`, and only then
/// releases the replayed and held messages, so `joined` always comes first.
async fn join(j: Joining<'_>) -> Result<Joined, Refused> {
    let Joining {
        state,
        claims,
        signal,
        resume,
        msg_ref,
    } = j;
    let info = match state
        .rooms
        .resolve(&claims.room, claims.region.as_ref())
        .await
    {
        Ok(info) => info,
        Err(error) => {
            let code = match &error {
                ResolveError::NotFound(_) => ErrorCode::RoomNotFound,
                ResolveError::PlacementTimeout(_) | ResolveError::NoFit(_) => {
                    ErrorCode::PlacementTimeout
                }
                ResolveError::Create { .. } | ResolveError::Delete { .. } => ErrorCode::Internal,
                ResolveError::SfuCredentials { .. } | ResolveError::Provision { .. } => {
                    // The cause (a Secret's name, a missing key) is for the logs, not clients.
                    tracing::warn!(%error, room = %claims.room.as_str(), "join refused");
                    return Err(Refused::new(
                        ErrorCode::Internal,
                        "the room's SFU cannot be used right now; retry shortly",
                        msg_ref,
                    ));
                }
            };
            tracing::debug!(%error, "join refused");
            return Err(Refused::new(code, error.to_string(), msg_ref));
        }
    };
    let (max, sfu, turn_urls) = (info.max_participants, info.sfu, info.turn_urls);
    let room = &claims.room;
    let id = match &resume {
        Some(r) => token_participant(&r.token).ok_or_else(|| {
            Refused::new(
                ErrorCode::ResumeFailed,
                "cannot resume: the resume token is not one this server issued",
                msg_ref.clone(),
            )
        })?,
        None => ParticipantId::parse(&format!("p-{}", crate::ids::random_hex(8)))
            .map_err(|_| Refused::new(ErrorCode::Internal, "cannot make a participant id", None))?,
    };
    let internal = || Refused::new(ErrorCode::Internal, "cannot make a resume token", None);
    let session = new_resume_token(&id).ok_or_else(internal)?;
    let entry = Arc::new(ParticipantEntry {
        id: id.clone(),
        user: claims.user.clone(),
        name: claims.name.clone(),
        pod: state.pod.clone(),
        resume: Some(session.clone()),
        joined_at: Some(unix_now_ms()),
    });
    let delivered = resume.as_ref().map_or(0, |r| r.last_seq);
    state
        .hub
        .register(room, Member::new(entry.clone(), signal.clone(), delivered));
    if let Err(error) = state.store.listen(room, &id).await {
        state.metrics.store_error(&error);
        undo_join(state, room, &id, &session).await;
        tracing::warn!(%error, "cannot subscribe a participant");
        return Err(Refused::new(
            ErrorCode::Unavailable,
            "room state is unavailable; retry shortly",
            msg_ref,
        ));
    }
    let entered = match &resume {
        None => state
            .store
            .join(room, ParticipantEntry::clone(&entry), max)
            .await
            .map(|admitted| (admitted.participants, 0, Vec::new())),
        Some(r) => state
            .store
            .resume(
                room,
                ResumeRequest {
                    user: &claims.user,
                    token: &r.token,
                    last_seq: r.last_seq,
                    new_token: &session,
                    pod: &state.pod,
                },
            )
            .await
            .map(|resumed| (resumed.participants, resumed.seq, resumed.missed)),
    };
    let (participants, seq, missed) = match entered {
        Ok(entered) => entered,
        Err(error) => {
            undo_join(state, room, &id, &session).await;
            return Err(match error {
                StoreError::RoomFull { max } => Refused::new(
                    ErrorCode::RoomFull,
                    format!("the room is full ({max} participants)"),
                    msg_ref,
                ),
                StoreError::ResumeRefused(why) => Refused::new(
                    ErrorCode::ResumeFailed,
                    format!("cannot resume: {why}"),
                    msg_ref,
                ),
                error => {
                    state.metrics.store_error(&error);
                    state.health.store_failed(&error);
                    tracing::warn!(%error, "room state unavailable");
                    let code = match error {
                        StoreError::Unavailable(_) => ErrorCode::Unavailable,
                        _ => ErrorCode::Internal,
                    };
                    Refused::new(code, "room state is unavailable; retry shortly", msg_ref)
                }
            });
        }
    };
    let joined = ServerMessage::Joined {
        v: PROTOCOL_VERSION,
        participant_id: id.clone(),
        room: room.clone(),
        participants: participants.iter().map(|p| p.public()).collect(),
        sfu: sfu
            .as_ref()
            .map(|route| route.for_participant(unix_now(), state.sfu_token_ttl)),
        ice_servers: state.ice.servers_for(claims.user.as_str(), &turn_urls),
        resume_token: session.clone(),
        seq,
        resumed: resume.is_some(),
        msg_ref,
    };
    let _ = signal.queue_reply(Outbound::Text(joined.to_json().into()));
    state.hub.release(room, &id, &session, missed);
    tracing::debug!(room = %room.as_str(), participant = %id.as_str(), user = %claims.user.as_str(), resumed = resume.is_some(), "joined");
    Ok(Joined {
        room: room.clone(),
        entry,
        turn_urls,
        sfu: sfu.filter(SfuRoute::has_token),
    })
}

/// Takes back a join that failed half-way.
async fn undo_join(state: &AppState, room: &RoomId, id: &ParticipantId, session: &ResumeToken) {
    if state.hub.unregister(room, id, session) {
        state.store.unlisten(room, id).await;
    }
}

/// Runs a connection until it closes.
///
/// Not an `async fn`: an idle connection's whole cost is its task, so the state is built here
/// and [`connection_loop`]'s future holds only what it needs across its awaits, not a copy of
/// every argument.
pub fn run(
    socket: WebSocket,
    state: Arc<AppState>,
    claims: Box<JoinClaims>,
) -> impl Future<Output = ()> + Send {
    let counted = state.hub.session_started();
    let signal = Arc::new(SessionSignal::new(state.limits.send_queue));
    connection_loop(Box::new(Connection {
        state,
        claims,
        socket,
        signal,
        _counted: counted,
    }))
}

/// What the connection's task owns.
struct Connection {
    state: Arc<AppState>,
    claims: Box<JoinClaims>,
    socket: WebSocket,
    /// The outgoing queue, shared with the hub: replies and `joined` go through it too, so
    /// they keep their order with what the hub queues.
    signal: Arc<SessionSignal>,
    /// Counts the session as open for as long as the task runs.
    _counted: SessionGuard,
}

/// What woke the connection's loop.
enum Wake {
    Frame(Option<Result<Message, axum::Error>>),
    /// A message from the outgoing queue.
    Outgoing(Outbound),
    /// The earliest of the connection's deadlines passed (see [`Deadlines`]).
    Timer,
    Stopped,
    Killed,
}

/// Why the connection stopped writing to its socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriteEnd {
    /// A close frame was sent.
    Closed,
    /// The socket failed.
    Broken,
    /// The hub found the outgoing queue full: a slow consumer, to close with 4006.
    SlowConsumer,
}

/// Sends one frame, unless the connection is killed as a slow consumer first: a client that
/// reads nothing leaves the send pending, and its queue filling up is what ends the wait.
///
/// Almost every send completes at once, so it is first tried without waiting; only a send
/// that must wait for the client goes on the heap. Kept inline, a waiting send's state would
/// be part of every connection's task for its whole life.
fn send<'a>(
    socket: &'a mut WebSocket,
    signal: &'a SessionSignal,
    message: Message,
) -> impl Future<Output = Result<(), WriteEnd>> + Send + 'a {
    let mut message = Some(message);
    let at_once = poll_send(
        socket,
        &mut message,
        &mut Context::from_waker(Waker::noop()),
    );
    match at_once {
        Poll::Ready(sent) => Either::Left(future::ready(sent)),
        Poll::Pending => Either::Right(Box::pin(send_waiting(socket, signal, message))),
    }
}

/// A send that has to wait for the client to read.
async fn send_waiting(
    socket: &mut WebSocket,
    signal: &SessionSignal,
    mut message: Option<Message>,
) -> Result<(), WriteEnd> {
    tokio::select! {
        biased;
        sent = std::future::poll_fn(|cx| poll_send(socket, &mut message, cx)) => sent,
        () = signal.killed() => Err(WriteEnd::SlowConsumer),
    }
}

/// Hands `message` (if not handed over yet) to the socket and flushes it.
fn poll_send(
    socket: &mut WebSocket,
    message: &mut Option<Message>,
    cx: &mut Context<'_>,
) -> Poll<Result<(), WriteEnd>> {
    if message.is_some() {
        match socket.poll_ready_unpin(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(_)) => return Poll::Ready(Err(WriteEnd::Broken)),
            Poll::Ready(Ok(())) => {}
        }
        if let Some(message) = message.take()
            && socket.start_send_unpin(message).is_err()
        {
            return Poll::Ready(Err(WriteEnd::Broken));
        }
    }
    socket.poll_flush_unpin(cx).map_err(|_| WriteEnd::Broken)
}

/// Puts one queued message on the socket; a close frame ends the writing either way.
fn send_outbound<'a>(
    socket: &'a mut WebSocket,
    signal: &'a SessionSignal,
    outbound: Outbound,
) -> impl Future<Output = Result<(), WriteEnd>> + Send + 'a {
    match outbound {
        Outbound::Text(text) => {
            Either::Left(send(socket, signal, Message::Text(text.as_ref().into())))
        }
        Outbound::Close(code) => {
            Either::Right(send(socket, signal, close_message(code)).map(|_| Err(WriteEnd::Closed)))
        }
    }
}

/// Runs `work` (a join or a relay, which wait on the store) while still writing queued
/// messages to the socket, so what others send this client does not pile up in its queue
/// behind its own request. Returns the work's outcome, and why writing ended if it did.
async fn while_writing<T>(
    socket: &mut WebSocket,
    signal: &SessionSignal,
    work: impl Future<Output = T>,
) -> (T, Option<WriteEnd>) {
    tokio::pin!(work);
    loop {
        let outbound = tokio::select! {
            biased;
            done = &mut work => return (done, None),
            next = signal.next_outbound() => next,
        };
        if let Err(end) = send_outbound(socket, signal, outbound).await {
            return (work.await, Some(end));
        }
    }
}

/// The connection's deadlines. The loop waits on one timer, for the earliest that applies, and
/// checks them all when it fires: one timer per connection instead of one per deadline, so
/// an idle connection stays small and a message re-arms one timer, not six.
struct Deadlines {
    /// Close with 4001 if no `join` came by then.
    join: tokio::time::Instant,
    /// The last frame received; the connection closes idle `idle_timeout` after it.
    last_seen: tokio::time::Instant,
    /// Send a WebSocket ping.
    ping: tokio::time::Instant,
    /// Send fresh TURN credentials (`iceServersRefresh`).
    ice_refresh: tokio::time::Instant,
    /// Send a fresh SFU token (`sfuRefresh`), at 2/3 of its lifetime from the last one.
    sfu_refresh: tokio::time::Instant,
    /// Extend the participant's entry in the store.
    keep_alive: tokio::time::Instant,
}

/// A parsed client message, as the connection acts on it.
enum Request {
    Join {
        resume: Option<Resume>,
        msg_ref: Option<MsgRef>,
    },
    Relay {
        to: ParticipantId,
        relayed: Relayed,
        msg_ref: Option<MsgRef>,
    },
    Leave {
        msg_ref: Option<MsgRef>,
    },
    Ping {
        msg_ref: Option<MsgRef>,
    },
}

/// What an offer, answer or candidate carries to its target.
enum Relayed {
    Offer(crate::protocol::Sdp),
    Answer(crate::protocol::Sdp),
    Candidate(crate::protocol::IceCandidate),
}

impl Relayed {
    /// The message the target receives; the store sets its `seq`.
    fn into_message(self, from: ParticipantId) -> ServerMessage {
        match self {
            Relayed::Offer(sdp) => ServerMessage::Offer { from, sdp, seq: 0 },
            Relayed::Answer(sdp) => ServerMessage::Answer { from, sdp, seq: 0 },
            Relayed::Candidate(candidate) => ServerMessage::Candidate {
                from,
                candidate,
                seq: 0,
            },
        }
    }
}

impl From<ClientMessage> for Request {
    fn from(message: ClientMessage) -> Self {
        match message {
            ClientMessage::Join {
                resume, msg_ref, ..
            } => Request::Join { resume, msg_ref },
            ClientMessage::Offer { to, sdp, msg_ref } => Request::Relay {
                to,
                relayed: Relayed::Offer(sdp),
                msg_ref,
            },
            ClientMessage::Answer { to, sdp, msg_ref } => Request::Relay {
                to,
                relayed: Relayed::Answer(sdp),
                msg_ref,
            },
            ClientMessage::Candidate {
                to,
                candidate,
                msg_ref,
            } => Request::Relay {
                to,
                relayed: Relayed::Candidate(candidate),
                msg_ref,
            },
            ClientMessage::Leave { msg_ref } => Request::Leave { msg_ref },
            ClientMessage::Ping { msg_ref } => Request::Ping { msg_ref },
        }
    }
}

fn not_joined(msg_ref: Option<MsgRef>) -> ServerMessage {
    ServerMessage::error(ErrorCode::NotJoined, "send join first", msg_ref)
}

/// Where the connection is: waiting for its `join`, with the token's claims, or joined.
enum Phase {
    Waiting(Box<JoinClaims>),
    Joined(Box<Joined>),
}

impl Phase {
    fn joined(&self) -> Option<&Joined> {
        match self {
            Phase::Waiting(_) => None,
            Phase::Joined(j) => Some(j),
        }
    }
}

/// The connection, from its first frame to its end, in one task: it reads frames and answers,
/// relays and joins from here, and writes its outgoing queue and pings to the socket. Then it
/// leaves or keeps the participant for a resume, writes what is still queued and closes.
///
/// One task, not a reader and a writer: a connection spends its life waiting, and a second
/// task with its own share of the socket cost every idle connection about a kilobyte.
async fn connection_loop(connection: Box<Connection>) {
    let Connection {
        state,
        claims,
        mut socket,
        signal,
        _counted,
    } = {
        // Moved out in a block of its own, so the box is freed here rather than kept (empty)
        // until the connection ends.
        let connection = connection;
        *connection
    };
    let limits = &state.limits;
    let mut bucket = TokenBucket::new(
        limits.rate_per_second,
        limits.rate_burst,
        limits.flood_strikes,
        Instant::now(),
    );
    // Boxed both ways: the token's claims are needed only until the join, and the joined
    // state only after it; kept inline, both would be part of every connection's task.
    let mut phase = Phase::Waiting(claims);
    let started = tokio::time::Instant::now();
    let keep_alive_every = (state.store.participant_ttl() / 3).max(Duration::from_millis(100));
    let mut deadlines = Deadlines {
        join: started + limits.join_timeout,
        last_seen: started,
        ping: started + limits.ping_interval,
        ice_refresh: started + refresh_delay(state.ice.credential_ttl),
        sfu_refresh: started + sfu_refresh_delay(state.sfu_token_ttl),
        keep_alive: started + keep_alive_every,
    };
    // Only a `leave` (or a client close with 1000) leaves the room at once; any other end
    // keeps the participant for a resume until its entry expires.
    let mut left_on_purpose = false;
    let reply = |message: ServerMessage| {
        let _ = signal.queue_reply(Outbound::Text(message.to_json().into()));
    };
    // Set when this side decided to close; the close frame is queued behind the replies
    // before it and sent once the loop has ended.
    let mut we_closed = false;
    // Why writing ended, once it has.
    let mut write_end: Option<WriteEnd> = None;
    let close = |code: CloseCode| {
        let _ = signal.queue_reply(Outbound::Close(code));
    };

    // Armed for the earliest deadline; a later one (a frame moved the idle deadline on) lets it
    // fire early and re-arm, so a busy connection does not re-arm it on every frame.
    let timer = tokio::time::sleep_until(deadlines.join);
    tokio::pin!(timer);
    loop {
        let idle_at = deadlines.last_seen + limits.idle_timeout;
        let next_deadline = match phase.joined() {
            None => idle_at.min(deadlines.join).min(deadlines.ping),
            Some(j) => {
                let next = idle_at
                    .min(deadlines.ping)
                    .min(deadlines.ice_refresh)
                    .min(deadlines.keep_alive);
                if j.sfu.is_some() {
                    next.min(deadlines.sfu_refresh)
                } else {
                    next
                }
            }
        };
        if timer.is_elapsed() || next_deadline < timer.deadline() {
            timer.as_mut().reset(next_deadline);
        }
        let stopped: OptionFuture<_> = phase
            .joined()
            .is_none()
            .then(|| Box::pin(state.hub.stopped()))
            .into();
        let wake = tokio::select! {
            frame = socket.next() => Wake::Frame(frame),
            next = signal.next_outbound() => Wake::Outgoing(next),
            () = &mut timer => Wake::Timer,
            // A pod going away: a joined session hears it from the hub (`reconnect`, then
            // 1001); one that has not joined has no session to resume and just gets 1001.
            // Boxed, and only until the join: it is a connection's largest wait otherwise.
            _ = stopped, if phase.joined().is_none() => Wake::Stopped,
            () = signal.killed() => Wake::Killed,
        };
        let frame = match wake {
            Wake::Frame(frame) => frame,
            Wake::Outgoing(outbound) => {
                if let Err(end) = send_outbound(&mut socket, &signal, outbound).await {
                    write_end = Some(end);
                    // The hub (a kick, a replaced session, a room ended) closed it: finish
                    // the close handshake as for any close of ours.
                    we_closed = end == WriteEnd::Closed;
                    break;
                }
                continue;
            }
            Wake::Stopped => {
                we_closed = true;
                close(CloseCode::GoingAway);
                break;
            }
            Wake::Killed => {
                write_end = Some(WriteEnd::SlowConsumer);
                break;
            }
            Wake::Timer => {
                let now = tokio::time::Instant::now();
                if phase.joined().is_none() && now >= deadlines.join {
                    we_closed = true;
                    close(CloseCode::JoinTimeout);
                    break;
                }
                if now >= idle_at {
                    we_closed = true;
                    close(CloseCode::IdleTimeout);
                    break;
                }
                if now >= deadlines.ping {
                    deadlines.ping = now + limits.ping_interval;
                    if let Err(end) =
                        send(&mut socket, &signal, Message::Ping(Vec::new().into())).await
                    {
                        write_end = Some(end);
                        break;
                    }
                }
                let Some(j) = phase.joined() else { continue };
                if now >= deadlines.ice_refresh {
                    // Fresh TURN credentials before the old ones expire: long calls keep
                    // working.
                    reply(ServerMessage::IceServersRefresh {
                        ice_servers: state.ice.servers_for(j.entry.user.as_str(), &j.turn_urls),
                    });
                    deadlines.ice_refresh = now + refresh_delay(state.ice.credential_ttl);
                }
                if j.sfu.is_some() && now >= deadlines.sfu_refresh {
                    // A fresh SFU token before the old one expires: Janus checks it on every
                    // request. The room's SFU as it is now, so a refresh follows a move.
                    let current = state.rooms.current_sfu(&j.room).await;
                    if let Some(route) = current
                        .as_ref()
                        .or(j.sfu.as_ref())
                        .filter(|r| r.has_token())
                    {
                        reply(ServerMessage::SfuRefresh {
                            sfu: route.for_participant(unix_now(), state.sfu_token_ttl),
                        });
                    }
                    deadlines.sfu_refresh =
                        tokio::time::Instant::now() + sfu_refresh_delay(state.sfu_token_ttl);
                }
                if now >= deadlines.keep_alive {
                    // Boxed: it runs every third of a TTL, and inline it would make every
                    // connection's task larger.
                    Box::pin(keep_alive(&state, j, &signal)).await;
                    deadlines.keep_alive = now + keep_alive_every;
                }
                continue;
            }
        };
        let Some(frame) = frame else { break };
        deadlines.last_seen = tokio::time::Instant::now();
        // The frame and the parsed message end in this block: only the small `Request` is
        // kept across the awaits that follow, not every connection's largest message.
        let request = {
            let text = match frame {
                Ok(Message::Text(text)) => text,
                Ok(Message::Binary(_)) => {
                    we_closed = true;
                    close(CloseCode::UnsupportedData);
                    break;
                }
                Ok(Message::Close(frame)) => {
                    left_on_purpose = frame.is_some_and(|f| f.code == 1000);
                    break;
                }
                Ok(Message::Ping(_) | Message::Pong(_)) => continue,
                Err(error) => {
                    let code = crate::protocol::close_for_receive_error(&error.to_string());
                    tracing::debug!(%error, close = code.map(CloseCode::code), "receive error");
                    if let Some(code) = code {
                        we_closed = true;
                        close(code);
                    }
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
                    we_closed = true;
                    close(CloseCode::PolicyViolation);
                    break;
                }
            }
            match parse_client_message(text.as_str()) {
                Ok(message) => Request::from(message),
                Err(error) => {
                    // A `join` refused for its fields or version is a failed join too.
                    if let Some(resuming) = crate::protocol::join_attempt(text.as_str()) {
                        state.metrics.join_refused(resuming, error.code());
                    }
                    reply(error.to_server_message());
                    continue;
                }
            }
        };
        match request {
            // `ping` needs no session: a client may measure the round trip before joining.
            Request::Ping { msg_ref } => reply(ServerMessage::Pong { msg_ref }),
            Request::Join { resume, msg_ref } => {
                let resuming = resume.is_some();
                let Phase::Waiting(claims) = &phase else {
                    state
                        .metrics
                        .join_refused(resuming, ErrorCode::AlreadyJoined);
                    reply(ServerMessage::error(
                        ErrorCode::AlreadyJoined,
                        "this connection has already joined",
                        msg_ref,
                    ));
                    continue;
                };
                let joining = Joining {
                    state: &state,
                    claims,
                    signal: &signal,
                    resume,
                    msg_ref,
                };
                // Boxed: kept inline, the join's awaits would make every connection's task as
                // large as the join's biggest state, for the whole life of the connection.
                let (outcome, ended) =
                    Box::pin(while_writing(&mut socket, &signal, join(joining))).await;
                match outcome {
                    Ok(j) => {
                        let now = tokio::time::Instant::now();
                        deadlines.sfu_refresh = now + sfu_refresh_delay(state.sfu_token_ttl);
                        // The join wrote the entry with a whole TTL: the first refresh is
                        // due a third of a TTL from now.
                        deadlines.keep_alive = now + keep_alive_every;
                        let counter = if resuming {
                            &state.metrics.resumes
                        } else {
                            &state.metrics.joins
                        };
                        counter.inc();
                        phase = Phase::Joined(Box::new(j));
                    }
                    Err(refused) => {
                        state.metrics.join_refused(resuming, refused.code);
                        reply(refused.message);
                    }
                }
                if let Some(end) = ended {
                    write_end = Some(end);
                    we_closed = end == WriteEnd::Closed;
                    break;
                }
            }
            Request::Leave { msg_ref } => {
                if phase.joined().is_none() {
                    reply(not_joined(msg_ref));
                    continue;
                }
                left_on_purpose = true;
                we_closed = true;
                close(CloseCode::Normal);
                break;
            }
            Request::Relay {
                to,
                relayed,
                msg_ref,
            } => {
                let Some(j) = phase.joined() else {
                    reply(not_joined(msg_ref));
                    continue;
                };
                let message = relayed.into_message(j.id().clone());
                // Boxed, and owning its message: kept inline, the relay's state and the
                // message would make every connection's task that much larger for its whole
                // life, though a connection spends almost all of it waiting, not relaying.
                let work = relay_owned(&state, j, to, message, msg_ref);
                let (refused, ended) = Box::pin(while_writing(&mut socket, &signal, work)).await;
                if let Some(error) = refused {
                    reply(error);
                }
                if let Some(end) = ended {
                    write_end = Some(end);
                    we_closed = end == WriteEnd::Closed;
                    break;
                }
            }
        }
    }

    if let Phase::Joined(j) = phase {
        let last_here = j
            .session()
            .is_none_or(|session| state.hub.unregister(&j.room, j.id(), session));
        // A replaced session leaves the room state alone: a newer session owns it now.
        if left_on_purpose
            && !signal.was_replaced()
            && let Err(error) = state.store.leave(&j.room, j.id()).await
        {
            // The entry expires on its own after the participant TTL.
            tracing::debug!(%error, "cannot remove participant from the store");
        }
        if last_here {
            state.store.unlisten(&j.room, j.id()).await;
        }
    }
    // Boxed: it runs once, at the end, and inline its state would be part of every
    // connection's task from the start.
    Box::pin(close_socket(socket, signal, write_end, we_closed)).await;
}

/// Writes what is left and closes the socket.
async fn close_socket(
    mut socket: WebSocket,
    signal: Arc<SessionSignal>,
    write_end: Option<WriteEnd>,
    we_closed: bool,
) {
    // A client that reads nothing must not hold the connection for long: a few seconds let
    // a slow consumer that reads again still get its 4006.
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        finish_writing(&mut socket, &signal, write_end),
    )
    .await;
    // Nothing more is written: later messages are refused rather than kept.
    signal.close_queue();
    if we_closed && write_end != Some(WriteEnd::Broken) {
        // Finish the close handshake: read (and drop) what the client still sends until its
        // Close arrives, so the socket is not reset under a close frame it has not read yet.
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(Ok(frame)) = socket.next().await {
                if matches!(frame, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }
}

/// The end of the writing: a slow consumer gets its 4006 at once, ahead of what it did not
/// read; otherwise what is still queued goes out up to the close frame, or the socket is
/// closed plainly (which also answers a close the client started).
async fn finish_writing(
    socket: &mut WebSocket,
    signal: &SessionSignal,
    write_end: Option<WriteEnd>,
) {
    match write_end {
        Some(WriteEnd::SlowConsumer) => {
            let _ = socket.send(close_message(CloseCode::SlowConsumer)).await;
        }
        Some(WriteEnd::Closed | WriteEnd::Broken) => {}
        None => {
            while let Some(outbound) = signal.try_next() {
                match send_outbound(socket, signal, outbound).await {
                    Ok(()) => {}
                    Err(WriteEnd::Closed) => return,
                    Err(WriteEnd::SlowConsumer) => {
                        let _ = socket.send(close_message(CloseCode::SlowConsumer)).await;
                        return;
                    }
                    // A client that closed first takes nothing more but its close reply.
                    Err(WriteEnd::Broken) => break,
                }
            }
            let _ = socket.close().await;
        }
    }
}

/// Extends the participant's entry, putting it back if the store lost it (but never one the
/// application removed: its connection is closing).
async fn keep_alive(state: &AppState, j: &Joined, signal: &SessionSignal) {
    match state.store.refresh(&j.room, j.id()).await {
        Ok(true) => {}
        Ok(false) if signal.was_replaced() => {}
        Ok(false) => {
            let delivered = j
                .session()
                .and_then(|_| state.hub.delivered(&j.room, j.id()))
                .unwrap_or(0);
            match state
                .store
                .restore(&j.room, ParticipantEntry::clone(&j.entry), delivered)
                .await
            {
                Ok(true) => {
                    tracing::info!(room = %j.room.as_str(), participant = %j.id().as_str(), "participant was missing from the room state; restored");
                }
                Ok(false) => {}
                Err(error) => tracing::debug!(%error, "cannot restore participant"),
            }
        }
        Err(error) => tracing::debug!(%error, "cannot refresh participant"),
    }
}

/// [`relay`], owning its message, so the caller can box the whole of it.
async fn relay_owned(
    state: &AppState,
    j: &Joined,
    to: ParticipantId,
    message: ServerMessage,
    msg_ref: Option<MsgRef>,
) -> Option<ServerMessage> {
    relay(state, j, &to, &message, msg_ref).await
}

/// How often a relay to a missing participant is tried again while the room is being rebuilt.
const REBUILD_RETRY: Duration = Duration::from_millis(50);

/// Relays a message through the store, which finds the target inside the sender's room on
/// whichever pod it is. Returns the error to send back, if any.
///
/// While the room state is known to be down the relay fails at once with `unavailable`
/// instead of waiting out the timeout and holding the client's later messages up. While the
/// room is being rebuilt after Redis lost it, a target that is missing may be connected to a
/// pod that has not put it back yet: the relay is tried again until it is back or
/// [`REBUILD_WINDOW`] has passed.
async fn relay(
    state: &AppState,
    j: &Joined,
    to: &ParticipantId,
    message: &ServerMessage,
    msg_ref: Option<MsgRef>,
) -> Option<ServerMessage> {
    if to == j.id() {
        // Yourself is not another participant: nothing to negotiate, so nothing is delivered.
        state
            .metrics
            .relay_failures
            .get_or_create(&ReasonLabel {
                reason: ErrorCode::UnknownParticipant.as_str(),
            })
            .inc();
        return Some(unknown(to, msg_ref));
    }
    let failed = |reason| {
        state
            .metrics
            .relay_failures
            .get_or_create(&ReasonLabel { reason })
            .inc();
    };
    let unavailable = |msg_ref| {
        ServerMessage::error(
            ErrorCode::Unavailable,
            "room state is unavailable; the message was not delivered",
            msg_ref,
        )
    };
    if state.health.store_down().is_some() {
        failed(ErrorCode::Unavailable.as_str());
        return Some(unavailable(msg_ref));
    }
    let text = message.to_json();
    let give_up = tokio::time::Instant::now() + REBUILD_WINDOW;
    let outcome = loop {
        let outcome = state.store.relay(&j.room, to, &text).await;
        if !matches!(outcome, Ok(None)) || tokio::time::Instant::now() >= give_up {
            break outcome;
        }
        match state.store.rebuilding(&j.room, j.id()).await {
            Ok(true) => {
                // The sender is connected, so it belongs in the room: put it back at once
                // if the state lost it (this is a no-op when it is there).
                let delivered = state.hub.delivered(&j.room, j.id()).unwrap_or(0);
                if let Err(error) = state
                    .store
                    .restore(&j.room, ParticipantEntry::clone(&j.entry), delivered)
                    .await
                {
                    break Err(error);
                }
                tokio::time::sleep(REBUILD_RETRY).await;
            }
            Ok(false) => break outcome,
            Err(error) => break Err(error),
        }
    };
    match outcome {
        Ok(Some(_)) => {
            state.metrics.relayed.inc();
            None
        }
        Ok(None) => {
            failed(ErrorCode::UnknownParticipant.as_str());
            Some(unknown(to, msg_ref))
        }
        Err(error) => {
            failed(error.metric_label());
            state.metrics.store_error(&error);
            state.health.store_failed(&error);
            tracing::warn!(%error, "cannot relay");
            let code = match error {
                StoreError::Unavailable(_) => ErrorCode::Unavailable,
                _ => ErrorCode::Internal,
            };
            Some(ServerMessage::error(
                code,
                "room state is unavailable; the message was not delivered",
                msg_ref,
            ))
        }
    }
}

fn unknown(to: &ParticipantId, msg_ref: Option<crate::protocol::MsgRef>) -> ServerMessage {
    ServerMessage::error(
        ErrorCode::UnknownParticipant,
        format!("no participant {} in this room", to.as_str()),
        msg_ref,
    )
}

/// Refresh SFU tokens at 2/3 of their lifetime, so a client has a third of it to apply the new
/// one (Janus refuses a request with an expired token, keepalives included).
fn sfu_refresh_delay(ttl: Duration) -> Duration {
    (ttl * 2 / 3).max(Duration::from_secs(1))
}

/// Now, in Unix milliseconds.
fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Now, in Unix seconds.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Refresh at 80% of the credential lifetime, so clients apply new credentials well before
/// the old ones expire.
fn refresh_delay(ttl: Duration) -> Duration {
    (ttl * 4 / 5).max(Duration::from_secs(1))
}
