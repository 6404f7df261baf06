// Switchboard signaling client: one WebSocket to a Switchboard signaling server, speaking the
// protocol in docs/protocol.md. No dependencies; works in browsers and in Node 22+ (global
// WebSocket).
//
//   import { SwitchboardClient } from "./switchboard.js";
//   const client = new SwitchboardClient({ url: "wss://signaling.example.com/v1/ws",
//                                          token: () => fetchJoinToken() });
//   client.addEventListener("offer", (e) => handleOffer(e.detail.from, e.detail.sdp));
//   const joined = await client.connect();
//   client.sendOffer(peerId, pc.localDescription.sdp);
//
// The client keeps the session across dropped connections: it reconnects with backoff, resumes
// with its resume token and the last `seq` it processed, and drops relayed messages it has
// already seen, so every offer, answer and candidate is dispatched exactly once, in order.
// Media: when the room's SFU is a `JanusVideoRoom` (the `sfu` object of `joined`), the client
// carries the media through it by itself (SFU mode, see `JanusVideoRoom` below): it publishes
// `options.media` once and subscribes to everyone else; on `sfuReassigned` with a higher
// placement generation it leaves the old SFU and joins the new one, and on `sfuRefresh` it signs
// later requests with the new token. For other rooms (`Opaque` SFUs, or none) media stays peer
// to peer: the app exchanges offers, answers and candidates itself (`mediaMode` is "mesh").
//
// Types: switchboard.d.ts next to this file.
//
// Events (all CustomEvents, payload in `detail`):
//   state               "connecting" | "joined" | "resuming" | "closed"
//   joined              the `joined` message (also after a resume; `detail.resumed` tells)
//   reset               a resume was refused: the session is new; renegotiate every peer
//   participantjoined   { participant }        participantleft  { id, reason }
//   offer / answer      { from, sdp, seq }     candidate        { from, candidate, sdpMid, ... }
//   resync              { participants, seq }  renegotiate with everyone listed
//   sfureassigned       { sfu }  (only a higher generation)     iceservers  { iceServers }
//   sfurefresh          { sfu }  a fresh SFU token (not older than the current generation)
//   sfustate            { node, state }  the SFU session: "connecting" | "publishing" |
//                       "closed" | "failed"
//   remotestream        { participantId, feed, stream, pc, node }  a participant's media
//                       through the SFU
//   remotegone          { participantId, feed, node }
//   sfuerror            a JanusError from the SFU session
//   error               the server's `error` message

const RELAYED = new Set(["offer", "answer", "candidate"]);
// The close code the client uses to drop a connection on purpose while keeping the session;
// like a network failure, it is resumed.
const DROP_CODE = 4000;
// The close codes that end the session (docs/protocol.md, "Close codes"): left, replaced,
// kicked, room deleted, no join in time. Every other close, 4005 (idle) and 4006 (slow
// consumer) included, is resumed.
const FINAL_CODES = new Set([1000, 4001, 4002, 4003, 4004]);

/** An event target with a `state` whose every change is dispatched as a `state` event. */
class StatefulTarget extends EventTarget {
  setState(state) {
    if (this.state !== state) {
      this.state = state;
      this.emit("state", state);
    }
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

export class SwitchboardClient extends StatefulTarget {
  /**
   * @param {object} options
   * @param {string} options.url  the signaling WebSocket URL, ending in /v1/ws
   * @param {string | (() => string | Promise<string>)} options.token  a join token, or a
   *   function returning a fresh one (called for every connection, so reconnects after the
   *   token expired still work)
   * @param {boolean} [options.reconnect=true]  resume after unexpected disconnects
   * @param {number} [options.maxBackoffMs=5000]
   * @param {MediaStream | (() => MediaStream | Promise<MediaStream>) | null} [options.media]
   *   what to publish in SFU mode (a stream, or a function called once when first needed);
   *   null subscribes only
   * @param {boolean} [options.sfuMedia=true]  carry media through `JanusVideoRoom` SFUs; false
   *   leaves all media to the app
   * @param {RTCIceTransportPolicy} [options.iceTransportPolicy="all"]  for SFU PeerConnections
   */
  constructor({
    url,
    token,
    reconnect = true,
    maxBackoffMs = 5000,
    media = null,
    sfuMedia = true,
    iceTransportPolicy = "all",
  }) {
    super();
    this.media = media;
    this.sfuMedia = sfuMedia;
    this.iceTransportPolicy = iceTransportPolicy;
    /** @type {JanusVideoRoom | null} the SFU session carrying this client's media */
    this.sfuSession = null;
    // SFU session changes run one after another: a reassignment waits for the old session to
    // close before the new one opens, so a participant is never live on two SFUs.
    this.sfuQueue = Promise.resolve();
    this.localStream = null;
    this.url = url;
    this.token = token;
    this.reconnect = reconnect;
    this.maxBackoffMs = maxBackoffMs;
    this.state = "closed";
    this.participantId = null;
    this.room = null;
    this.sfu = null;
    this.iceServers = [];
    /** @type {Map<string, {id: string, user: string, name?: string}>} */
    this.participants = new Map();
    this.resumeToken = null;
    this.lastSeq = 0;
    this.ws = null;
    this.attempt = 0;
    this.leaving = false;
    this.retryAfterMs = null;
    this.pendingJoin = null;
  }

  /** Connects and joins; resolves with `joined`, rejects with the server's error. */
  connect() {
    this.leaving = false;
    return new Promise((resolve, reject) => {
      this.pendingJoin = { resolve, reject };
      this.open();
    });
  }

  sendOffer(to, sdp) {
    this.send({ type: "offer", to, sdp });
  }

  sendAnswer(to, sdp) {
    this.send({ type: "answer", to, sdp });
  }

  /** `candidate` is an RTCIceCandidate or its init dictionary. */
  sendCandidate(to, candidate) {
    const c = typeof candidate.toJSON === "function" ? candidate.toJSON() : candidate;
    const message = { type: "candidate", to, candidate: c.candidate };
    if (c.sdpMid != null) message.sdpMid = c.sdpMid;
    if (c.sdpMLineIndex != null) message.sdpMLineIndex = c.sdpMLineIndex;
    if (c.usernameFragment != null) message.usernameFragment = c.usernameFragment;
    this.send(message);
  }

  /** Leaves the room for good; the others see `participantLeft` with reason `left`. */
  leave() {
    this.leaving = true;
    this.send({ type: "leave" });
    this.switchSfu(null);
  }

  /** "sfu" while the media goes through an SFU session, "mesh" otherwise. */
  get mediaMode() {
    return this.sfuSession ? "sfu" : "mesh";
  }

  /** Whether `sfu` is handled by the built-in SFU mode. */
  carriesMedia(sfu) {
    return this.sfuMedia && sfu?.kind === "JanusVideoRoom";
  }

  /**
   * Applies the room's SFU from `joined`, `sfuReassigned` or `sfuRefresh`. Returns false (and
   * changes nothing) for an assignment older than the current one.
   */
  applySfu(sfu, source) {
    const current = this.sfu;
    if (sfu && current && typeof sfu.generation === "number" && typeof current.generation === "number") {
      const older = sfu.generation < current.generation;
      // A reassignment must move forward; a refresh may repeat the current generation.
      if (older || (source === "sfuReassigned" && sfu.generation === current.generation)) return false;
    }
    const sameRoom =
      current && sfu && current.node === sfu.node && current.url === sfu.url && current.room === sfu.room;
    this.sfu = sfu ?? null;
    if (!this.carriesMedia(sfu)) {
      if (this.sfuSession) this.switchSfu(null);
      return true;
    }
    if (sameRoom && this.sfuSession) {
      this.sfuSession.refresh(sfu);
    } else {
      this.switchSfu(sfu);
    }
    return true;
  }

  /** Closes the current SFU session (if any) and, when `sfu` is given, opens one there. */
  switchSfu(sfu) {
    this.sfuQueue = this.sfuQueue.then(async () => {
      const old = this.sfuSession;
      this.sfuSession = null;
      if (old) await old.stop();
      // Superseded while queued (a later reassignment, or the client left): skip.
      if (!sfu || this.leaving || this.sfu !== sfu) return;
      if (this.localStream === null && this.media !== null) {
        this.localStream = typeof this.media === "function" ? await this.media() : this.media;
      }
      const session = new JanusVideoRoom({
        sfu,
        participantId: this.participantId,
        stream: this.localStream,
        iceServers: this.iceServers,
        iceTransportPolicy: this.iceTransportPolicy,
      });
      this.sfuSession = session;
      const node = sfu.node;
      session.addEventListener("state", (e) => this.emit("sfustate", { node, state: e.detail }));
      session.addEventListener("remotestream", (e) => this.emit("remotestream", { ...e.detail, node }));
      session.addEventListener("remotegone", (e) => this.emit("remotegone", { ...e.detail, node }));
      session.addEventListener("error", (e) => this.emit("sfuerror", e.detail));
      // A failure is reported through `sfuerror`; the next reassignment replaces the session.
      await session.start().catch(() => {});
    });
    return this.sfuQueue;
  }

  /** Drops the socket without leaving, as a network failure would; the client resumes. */
  dropConnection() {
    if (this.ws) this.ws.close(DROP_CODE, "dropped");
  }

  send(message) {
    if (this.ws && this.ws.readyState === 1) {
      this.ws.send(JSON.stringify(message));
      return true;
    }
    return false;
  }

  async open() {
    const resuming = this.resumeToken !== null;
    this.setState(resuming ? "resuming" : "connecting");
    let token;
    try {
      token = typeof this.token === "function" ? await this.token() : this.token;
    } catch (error) {
      this.scheduleReconnect();
      return;
    }
    const separator = this.url.includes("?") ? "&" : "?";
    const ws = new WebSocket(`${this.url}${separator}access_token=${encodeURIComponent(token)}`);
    this.ws = ws;
    ws.onopen = () => {
      const join = { type: "join", v: 1 };
      if (this.resumeToken) join.resume = { token: this.resumeToken, lastSeq: this.lastSeq };
      ws.send(JSON.stringify(join));
    };
    ws.onmessage = (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      this.handle(message);
    };
    ws.onclose = (event) => {
      if (this.ws !== ws) return;
      this.ws = null;
      const final = FINAL_CODES.has(event.code);
      if (this.leaving || !this.reconnect || final || this.participantId === null) {
        this.setState("closed");
        this.switchSfu(null);
        if (this.pendingJoin) {
          this.pendingJoin.reject(new Error(`closed with ${event.code} ${event.reason}`));
          this.pendingJoin = null;
        }
        return;
      }
      this.scheduleReconnect();
    };
  }

  scheduleReconnect() {
    this.setState("resuming");
    const backoff = Math.min(this.maxBackoffMs, 100 * 2 ** this.attempt);
    const delay = this.retryAfterMs ?? backoff * (0.5 + Math.random() / 2);
    this.retryAfterMs = null;
    this.attempt += 1;
    setTimeout(() => this.open(), delay);
  }

  handle(message) {
    const type = message.type;
    if (RELAYED.has(type)) {
      // A message replayed by a resume and also received live comes twice: keep the first.
      if (message.seq <= this.lastSeq) return;
      this.lastSeq = message.seq;
      this.emit(type, message);
      return;
    }
    switch (type) {
      case "joined": {
        this.attempt = 0;
        this.participantId = message.participantId;
        this.room = message.room;
        this.iceServers = message.iceServers;
        this.resumeToken = message.resumeToken;
        if (!message.resumed) this.lastSeq = message.seq;
        this.participants = new Map(message.participants.map((p) => [p.id, p]));
        this.setState("joined");
        // A resume keeps the SFU session when the room is still where it was.
        this.applySfu(message.sfu ?? null, "joined");
        this.emit("joined", message);
        if (this.pendingJoin) {
          this.pendingJoin.resolve(message);
          this.pendingJoin = null;
        }
        break;
      }
      case "participantJoined":
        this.participants.set(message.participant.id, message.participant);
        this.emit("participantjoined", message);
        break;
      case "participantLeft":
        this.participants.delete(message.id);
        this.emit("participantleft", message);
        break;
      case "resync":
        this.participants = new Map(message.participants.map((p) => [p.id, p]));
        this.lastSeq = message.seq;
        this.emit("resync", message);
        break;
      case "reconnect":
        this.resumeToken = message.resumeToken;
        this.retryAfterMs = message.retryAfterMs ?? 0;
        break;
      case "sfuReassigned":
        if (this.applySfu(message.sfu, "sfuReassigned")) this.emit("sfureassigned", message);
        break;
      case "sfuRefresh":
        if (this.applySfu(message.sfu, "sfuRefresh")) this.emit("sfurefresh", message);
        break;
      case "iceServersRefresh":
        this.iceServers = message.iceServers;
        this.emit("iceservers", message);
        break;
      case "error":
        if (message.code === "resume_failed") {
          // The old session is gone: join afresh, as a new participant.
          this.resumeToken = null;
          this.lastSeq = 0;
          this.participantId = null;
          this.send({ type: "join", v: 1 });
          this.emit("reset", message);
        } else if (this.pendingJoin && this.participantId === null) {
          this.pendingJoin.reject(Object.assign(new Error(message.message), message));
          this.pendingJoin = null;
        }
        this.emit("error", message);
        break;
      default:
        break;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// SFU mode: a Janus VideoRoom session (docs/sfu.md). Written against Janus's documented
// WebSocket API (subprotocol `janus-protocol`), without janus.js.

// Janus drops a session that sends nothing for `session_timeout` (60 s by default); a
// keepalive every 15 s leaves room for a slow network and a short timeout.
const JANUS_KEEPALIVE_MS = 15000;
// How long one Janus request may stay unanswered before the session counts as failed.
const JANUS_REQUEST_TIMEOUT_MS = 10000;
const VIDEOROOM_PLUGIN = "janus.plugin.videoroom";

/** A Janus refusal or a broken session; `code` is Janus's or the VideoRoom plugin's. */
export class JanusError extends Error {
  constructor(message, code = null) {
    super(message);
    this.name = "JanusError";
    this.code = code;
  }
}

/**
 * One participant's media through one Janus VideoRoom: publishes `stream` once, subscribes to
 * every other publisher (including those that arrive later), keeps the Janus session alive and
 * signs every request with the current token. The publisher's `display` is the Switchboard
 * participant id, so remote streams map to participants across SFUs.
 *
 * Events (CustomEvents, payload in `detail`):
 *   state          "connecting" | "publishing" | "closed" | "failed"
 *   remotestream   { feed, participantId, stream, pc }   a publisher's media arrived
 *   remotegone     { feed, participantId }               that publisher left or unpublished
 *   error          JanusError
 */
export class JanusVideoRoom extends StatefulTarget {
  /**
   * @param {object} options
   * @param {object} options.sfu  the `sfu` object of `joined` (kind `JanusVideoRoom`)
   * @param {string} options.participantId  published as the Janus `display`
   * @param {MediaStream | null} options.stream  what to publish; null subscribes only
   * @param {RTCIceServer[]} [options.iceServers]
   * @param {RTCIceTransportPolicy} [options.iceTransportPolicy]
   */
  constructor({ sfu, participantId, stream, iceServers = [], iceTransportPolicy = "all" }) {
    super();
    this.sfu = sfu;
    this.participantId = participantId;
    this.stream = stream;
    this.iceServers = iceServers;
    this.iceTransportPolicy = iceTransportPolicy;
    this.state = "closed";
    this.ws = null;
    this.sessionId = null;
    this.publisher = null; // { handleId, pc, feedId, privateId }
    /** @type {Map<string | number, {handleId: number | null, pc: RTCPeerConnection | null, participantId: string}>} */
    this.subscribers = new Map();
    this.pending = new Map(); // transaction -> { resolve, reject, timer, ack }
    this.keepalive = null;
    this.nextTransaction = 1;
    this.closing = false;
  }

  /** Uses `sfu.token` for every later request (an `sfuRefresh` of the same room). */
  refresh(sfu) {
    this.sfu = { ...this.sfu, token: sfu.token, tokenExpiresAt: sfu.tokenExpiresAt, generation: sfu.generation };
  }

  /** Connects, joins the room as a publisher with its pin, publishes and subscribes. */
  async start() {
    this.setState("connecting");
    try {
      await this.open();
      const created = await this.request({ janus: "create" });
      this.sessionId = created.data.id;
      this.keepalive = setInterval(() => {
        this.request({ janus: "keepalive", session_id: this.sessionId }).catch((error) => this.fail(error));
      }, JANUS_KEEPALIVE_MS);
      const handleId = await this.attach();
      this.publisher = { handleId, pc: null, feedId: null, privateId: null };
      const joined = await this.message(handleId, {
        request: "join",
        ptype: "publisher",
        room: this.sfu.room,
        pin: this.sfu.pin,
        display: this.participantId,
      });
      this.publisher.feedId = joined.data.id;
      this.publisher.privateId = joined.data.private_id;
      if (this.stream) await this.publish();
      this.setState("publishing");
      for (const publisher of joined.data.publishers ?? []) this.subscribe(publisher);
    } catch (error) {
      this.fail(error);
      throw error;
    }
  }

  /** Leaves the room and closes the session, every PeerConnection and the socket. */
  async stop() {
    this.closing = true;
    clearInterval(this.keepalive);
    for (const feed of [...this.subscribers.keys()]) this.dropSubscriber(feed);
    if (this.publisher?.pc) this.publisher.pc.close();
    if (this.ws?.readyState === 1 && this.sessionId !== null) {
      // Best effort: on a dead SFU there is nobody to answer, and Janus frees a session whose
      // socket closes anyway.
      this.send({ janus: "destroy", session_id: this.sessionId, transaction: this.transaction() });
    }
    if (this.ws) this.ws.close();
    this.ws = null;
    for (const { reject, timer } of this.pending.values()) {
      clearTimeout(timer);
      reject(new JanusError("session closed"));
    }
    this.pending.clear();
    this.setState("closed");
  }

  fail(error) {
    if (this.closing || this.state === "failed") return;
    this.emit("error", error instanceof JanusError ? error : new JanusError(String(error?.message ?? error)));
    this.setState("failed");
  }

  open() {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.sfu.url, "janus-protocol");
      this.ws = ws;
      ws.onopen = () => resolve();
      ws.onerror = () => reject(new JanusError(`cannot connect to ${this.sfu.url}`));
      ws.onclose = () => {
        if (this.ws === ws && !this.closing) this.fail(new JanusError(`${this.sfu.url} closed the connection`));
      };
      ws.onmessage = (event) => {
        let message;
        try {
          message = JSON.parse(event.data);
        } catch {
          return;
        }
        this.handle(message);
      };
    });
  }

  transaction() {
    const t = `sb${this.nextTransaction}`;
    this.nextTransaction += 1;
    return t;
  }

  send(message) {
    if (this.ws?.readyState !== 1) return false;
    if (this.sfu.token) message.token = this.sfu.token;
    this.ws.send(JSON.stringify(message));
    return true;
  }

  /**
   * Sends a request and resolves with Janus's answer: `success` for session requests, or the
   * plugin's `event` for a `message` (after its `ack`). Rejects with Janus's error.
   */
  request(message, { awaitEvent = false } = {}) {
    return new Promise((resolve, reject) => {
      const transaction = this.transaction();
      const timer = setTimeout(() => {
        this.pending.delete(transaction);
        reject(new JanusError(`no answer to ${message.janus} within ${JANUS_REQUEST_TIMEOUT_MS} ms`));
      }, JANUS_REQUEST_TIMEOUT_MS);
      this.pending.set(transaction, { resolve, reject, timer, awaitEvent });
      if (!this.send({ ...message, transaction })) {
        clearTimeout(timer);
        this.pending.delete(transaction);
        reject(new JanusError("not connected to the SFU"));
      }
    });
  }

  async attach() {
    const attached = await this.request({ janus: "attach", session_id: this.sessionId, plugin: VIDEOROOM_PLUGIN });
    return attached.data.id;
  }

  /** A VideoRoom request on a handle; resolves with `{ data, jsep }` of the plugin's answer. */
  async message(handleId, body, jsep) {
    const message = { janus: "message", session_id: this.sessionId, handle_id: handleId, body };
    if (jsep) message.jsep = jsep;
    const event = await this.request(message, { awaitEvent: true });
    const data = event.plugindata?.data ?? {};
    if (data.error_code !== undefined) throw new JanusError(data.error ?? "VideoRoom error", data.error_code);
    return { data, jsep: event.jsep };
  }

  trickle(handleId, candidate) {
    const c = candidate ? candidate.toJSON() : { completed: true };
    this.send({ janus: "trickle", session_id: this.sessionId, handle_id: handleId, candidate: c, transaction: this.transaction() });
  }

  peerConnection(handleId) {
    const pc = new RTCPeerConnection({ iceServers: this.iceServers, iceTransportPolicy: this.iceTransportPolicy });
    pc.onicecandidate = (event) => this.trickle(handleId, event.candidate);
    return pc;
  }

  async publish() {
    const pc = this.peerConnection(this.publisher.handleId);
    this.publisher.pc = pc;
    for (const track of this.stream.getTracks()) pc.addTransceiver(track, { direction: "sendonly", streams: [this.stream] });
    await pc.setLocalDescription(await pc.createOffer());
    const { jsep } = await this.message(this.publisher.handleId, { request: "publish" }, {
      type: "offer",
      sdp: pc.localDescription.sdp,
    });
    if (!jsep) throw new JanusError("Janus answered publish without an SDP answer");
    await pc.setRemoteDescription(jsep);
  }

  /** Subscribes to one publisher with a handle of its own. */
  async subscribe(publisher) {
    const feed = publisher.id;
    if (this.subscribers.has(feed) || feed === this.publisher?.feedId) return;
    const entry = { handleId: null, pc: null, participantId: publisher.display ?? String(feed) };
    this.subscribers.set(feed, entry);
    try {
      entry.handleId = await this.attach();
      const { jsep } = await this.message(entry.handleId, {
        request: "join",
        ptype: "subscriber",
        room: this.sfu.room,
        pin: this.sfu.pin,
        private_id: this.publisher?.privateId,
        streams: [{ feed }],
      });
      if (!jsep) throw new JanusError("Janus offered no SDP for the subscription");
      if (!this.subscribers.has(feed)) return; // gone while we waited
      const pc = this.peerConnection(entry.handleId);
      entry.pc = pc;
      const stream = new MediaStream();
      pc.ontrack = (event) => {
        stream.addTrack(event.track);
        this.emit("remotestream", { feed, participantId: entry.participantId, stream, pc });
      };
      await pc.setRemoteDescription(jsep);
      await pc.setLocalDescription(await pc.createAnswer());
      await this.message(entry.handleId, { request: "start" }, { type: "answer", sdp: pc.localDescription.sdp });
    } catch (error) {
      this.fail(error);
    }
  }

  dropSubscriber(feed) {
    const entry = this.subscribers.get(feed);
    if (!entry) return;
    this.subscribers.delete(feed);
    if (entry.pc) entry.pc.close();
    if (entry.handleId !== null) {
      this.send({ janus: "detach", session_id: this.sessionId, handle_id: entry.handleId, transaction: this.transaction() });
    }
    this.emit("remotegone", { feed, participantId: entry.participantId });
  }

  handle(message) {
    const waiting = message.transaction ? this.pending.get(message.transaction) : undefined;
    if (waiting) {
      if (message.janus === "ack" && waiting.awaitEvent) return; // the event follows
      clearTimeout(waiting.timer);
      this.pending.delete(message.transaction);
      if (message.janus === "error") {
        waiting.reject(new JanusError(message.error?.reason ?? "Janus error", message.error?.code ?? null));
      } else {
        waiting.resolve(message);
      }
      return;
    }
    if (message.janus === "event" && message.sender === this.publisher?.handleId) {
      const data = message.plugindata?.data ?? {};
      for (const publisher of data.publishers ?? []) this.subscribe(publisher);
      const gone = data.unpublished ?? data.leaving;
      if (gone !== undefined && gone !== "ok") this.dropSubscriber(gone);
    }
  }
}
