// TypeScript declarations for switchboard.js: the client and the protocol's messages
// (docs/protocol.md). Checked by `tsc --noEmit` against tests/typescript/ in the test suite.

/** One participant of the room. */
export interface Participant {
  id: string;
  user: string;
  name?: string;
}

/** What an SFU node is; `Opaque` nodes carry no media for the client (peer to peer). */
export type SfuKind = "Opaque" | "JanusVideoRoom";

/** An `Opaque` node: a label only. */
export interface OpaqueSfu {
  node: string;
  url: string;
  kind?: "Opaque";
  /** The room's placement generation; a lower one than the client has is ignored. */
  generation?: number;
}

/** A Janus VideoRoom node: everything a client needs to reach its room there. */
export interface JanusVideoRoomSfu {
  node: string;
  /** Janus's WebSocket transport (subprotocol `janus-protocol`). */
  url: string;
  kind: "JanusVideoRoom";
  generation: number;
  /** The room's id on Janus (a string id). */
  room: string;
  pin: string;
  /** Janus signed token, sent with every Janus request. */
  token: string;
  /** Unix seconds; an `sfuRefresh` brings a new token before then. */
  tokenExpiresAt: number;
}

/** The `sfu` object of `joined`, `sfuReassigned` and `sfuRefresh`. */
export type SfuAssignment = OpaqueSfu | JanusVideoRoomSfu;

export interface JoinedMessage {
  type: "joined";
  v: 1;
  participantId: string;
  room: string;
  participants: Participant[];
  sfu?: SfuAssignment;
  iceServers: RTCIceServer[];
  resumeToken: string;
  seq: number;
  resumed: boolean;
  ref?: string;
}

export interface ParticipantJoinedMessage {
  type: "participantJoined";
  participant: Participant;
}

export type LeaveReason = "left" | "connection_lost" | "duplicate_identity" | "kicked" | "room_deleted";

export interface ParticipantLeftMessage {
  type: "participantLeft";
  id: string;
  reason: LeaveReason;
}

export interface OfferMessage {
  type: "offer";
  from: string;
  sdp: string;
  seq: number;
}

export interface AnswerMessage {
  type: "answer";
  from: string;
  sdp: string;
  seq: number;
}

export interface CandidateMessage {
  type: "candidate";
  from: string;
  candidate: string;
  sdpMid?: string;
  sdpMLineIndex?: number;
  usernameFragment?: string;
  seq: number;
}

export interface ErrorMessage {
  type: "error";
  code: string;
  message: string;
  ref?: string;
}

export interface SfuReassignedMessage {
  type: "sfuReassigned";
  sfu: SfuAssignment;
}

export interface SfuRefreshMessage {
  type: "sfuRefresh";
  sfu: SfuAssignment;
}

export interface IceServersRefreshMessage {
  type: "iceServersRefresh";
  iceServers: RTCIceServer[];
}

export interface ResyncMessage {
  type: "resync";
  participants: Participant[];
  seq: number;
}

/** Every message the server sends that the client interprets. */
export type ServerMessage =
  | JoinedMessage
  | ParticipantJoinedMessage
  | ParticipantLeftMessage
  | OfferMessage
  | AnswerMessage
  | CandidateMessage
  | ErrorMessage
  | SfuReassignedMessage
  | SfuRefreshMessage
  | IceServersRefreshMessage
  | ResyncMessage;

export type ClientState = "connecting" | "joined" | "resuming" | "closed";
export type SfuSessionState = "connecting" | "publishing" | "closed" | "failed";
export type MediaMode = "sfu" | "mesh";

/** A participant's media through the SFU. */
export interface RemoteStreamDetail {
  participantId: string;
  /** The publisher's id on the SFU. */
  feed: string | number;
  stream: MediaStream;
  pc: RTCPeerConnection;
  node: string;
}

export interface RemoteGoneDetail {
  participantId: string;
  feed: string | number;
  node: string;
}

/** Event name -> `detail` of the CustomEvent the client dispatches. */
export interface SwitchboardEventMap {
  state: ClientState;
  joined: JoinedMessage;
  reset: ErrorMessage;
  participantjoined: ParticipantJoinedMessage;
  participantleft: ParticipantLeftMessage;
  offer: OfferMessage;
  answer: AnswerMessage;
  candidate: CandidateMessage;
  resync: ResyncMessage;
  sfureassigned: SfuReassignedMessage;
  sfurefresh: SfuRefreshMessage;
  iceservers: IceServersRefreshMessage;
  sfustate: { node: string; state: SfuSessionState };
  remotestream: RemoteStreamDetail;
  remotegone: RemoteGoneDetail;
  sfuerror: JanusError;
  error: ErrorMessage;
}

export interface SwitchboardClientOptions {
  /** The signaling WebSocket URL, ending in /v1/ws. */
  url: string;
  /** A join token, or a function returning a fresh one (called for every connection). */
  token: string | (() => string | Promise<string>);
  reconnect?: boolean;
  maxBackoffMs?: number;
  /** What to publish in SFU mode; null subscribes only. */
  media?: MediaStream | (() => MediaStream | Promise<MediaStream>) | null;
  /** Carry media through `JanusVideoRoom` SFUs (default true). */
  sfuMedia?: boolean;
  iceTransportPolicy?: RTCIceTransportPolicy;
}

export class SwitchboardClient extends EventTarget {
  constructor(options: SwitchboardClientOptions);
  readonly state: ClientState;
  readonly participantId: string | null;
  readonly room: string | null;
  readonly sfu: SfuAssignment | null;
  readonly iceServers: RTCIceServer[];
  readonly participants: Map<string, Participant>;
  /** The SFU session carrying this client's media, in SFU mode. */
  readonly sfuSession: JanusVideoRoom | null;
  readonly mediaMode: MediaMode;
  connect(): Promise<JoinedMessage>;
  sendOffer(to: string, sdp: string): void;
  sendAnswer(to: string, sdp: string): void;
  sendCandidate(to: string, candidate: RTCIceCandidate | RTCIceCandidateInit): void;
  leave(): void;
  dropConnection(): void;
  /** Handles one server message as if it came over the socket. */
  handle(message: ServerMessage): void;
  addEventListener<K extends keyof SwitchboardEventMap>(
    type: K,
    listener: (event: CustomEvent<SwitchboardEventMap[K]>) => void,
    options?: boolean | AddEventListenerOptions,
  ): void;
  addEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | AddEventListenerOptions,
  ): void;
}

/** A Janus refusal or a broken SFU session; `code` is Janus's or the VideoRoom plugin's. */
export class JanusError extends Error {
  constructor(message: string, code?: number | null);
  readonly code: number | null;
}

export interface JanusVideoRoomEventMap {
  state: SfuSessionState;
  remotestream: Omit<RemoteStreamDetail, "node">;
  remotegone: Omit<RemoteGoneDetail, "node">;
  error: JanusError;
}

export interface JanusVideoRoomOptions {
  sfu: JanusVideoRoomSfu;
  /** Published as the Janus `display`, so remote streams map to participants. */
  participantId: string;
  stream: MediaStream | null;
  iceServers?: RTCIceServer[];
  iceTransportPolicy?: RTCIceTransportPolicy;
}

/** One participant's media through one Janus VideoRoom. */
export class JanusVideoRoom extends EventTarget {
  constructor(options: JanusVideoRoomOptions);
  readonly sfu: JanusVideoRoomSfu;
  readonly state: SfuSessionState;
  start(): Promise<void>;
  stop(): Promise<void>;
  /** Signs later requests with `sfu.token` (an `sfuRefresh` of the same room). */
  refresh(sfu: JanusVideoRoomSfu): void;
  addEventListener<K extends keyof JanusVideoRoomEventMap>(
    type: K,
    listener: (event: CustomEvent<JanusVideoRoomEventMap[K]>) => void,
    options?: boolean | AddEventListenerOptions,
  ): void;
  addEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | AddEventListenerOptions,
  ): void;
}
