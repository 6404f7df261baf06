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
// Events (all CustomEvents, payload in `detail`):
//   state               "connecting" | "joined" | "resuming" | "closed"
//   joined              the `joined` message (also after a resume; `detail.resumed` tells)
//   reset               a resume was refused: the session is new; renegotiate every peer
//   participantjoined   { participant }        participantleft  { id, reason }
//   offer / answer      { from, sdp, seq }     candidate        { from, candidate, sdpMid, ... }
//   resync              { participants, seq }  renegotiate with everyone listed
//   sfureassigned       { sfu }                iceservers       { iceServers }
//   error               the server's `error` message

const RELAYED = new Set(["offer", "answer", "candidate"]);
// The close code the client uses to drop a connection on purpose while keeping the session;
// like a network failure, it is resumed. Every other 4xxx code ends the session.
const DROP_CODE = 4000;

export class SwitchboardClient extends EventTarget {
  /**
   * @param {object} options
   * @param {string} options.url  the signaling WebSocket URL, ending in /v1/ws
   * @param {string | (() => string | Promise<string>)} options.token  a join token, or a
   *   function returning a fresh one (called for every connection, so reconnects after the
   *   token expired still work)
   * @param {boolean} [options.reconnect=true]  resume after unexpected disconnects
   * @param {number} [options.maxBackoffMs=5000]
   */
  constructor({ url, token, reconnect = true, maxBackoffMs = 5000 }) {
    super();
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

  setState(state) {
    if (this.state !== state) {
      this.state = state;
      this.emit("state", state);
    }
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
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
      // 1000 and the 4xxx codes mean the session is over (left, replaced, refused).
      const final = event.code === 1000 || (event.code >= 4000 && event.code !== DROP_CODE);
      if (this.leaving || !this.reconnect || final || this.participantId === null) {
        this.setState("closed");
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
        this.sfu = message.sfu ?? null;
        this.iceServers = message.iceServers;
        this.resumeToken = message.resumeToken;
        if (!message.resumed) this.lastSeq = message.seq;
        this.participants = new Map(message.participants.map((p) => [p.id, p]));
        this.setState("joined");
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
        this.sfu = message.sfu;
        this.emit("sfureassigned", message);
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
