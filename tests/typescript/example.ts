// A small typed app on Switchboard's client: what a TypeScript app writes, checked by
// `tsc --noEmit` (tests/tests/client_types.rs). The `@ts-expect-error` lines are mistakes the
// declarations must reject; if the types grow too loose, tsc fails on the unused directive.

import {
  JanusError,
  SwitchboardClient,
  type JanusVideoRoomSfu,
  type JoinedMessage,
  type SfuAssignment,
} from "../../signaling/web/switchboard.js";

const videos = new Map<string, MediaStream>();

const client = new SwitchboardClient({
  url: "wss://signaling.example.com/v1/ws",
  token: async () => "join-token",
  media: () => navigator.mediaDevices.getUserMedia({ video: true, audio: true }),
});

client.addEventListener("joined", (event) => {
  const joined: JoinedMessage = event.detail;
  describe(joined.sfu);
  for (const participant of joined.participants) console.log(participant.id, participant.name ?? participant.user);
});
client.addEventListener("remotestream", (event) => {
  videos.set(event.detail.participantId, event.detail.stream);
  console.log(`media of ${event.detail.participantId} through ${event.detail.node}`);
});
client.addEventListener("remotegone", (event) => videos.delete(event.detail.participantId));
client.addEventListener("sfureassigned", (event) => describe(event.detail.sfu));
client.addEventListener("sfustate", (event) => {
  const state: "connecting" | "publishing" | "closed" | "failed" = event.detail.state;
  console.log(event.detail.node, state);
});
client.addEventListener("sfuerror", (event) => {
  const error: JanusError = event.detail;
  console.log(error.code ?? "no code", error.message);
});
client.addEventListener("participantleft", (event) => {
  if (event.detail.reason === "duplicate_identity") console.log("replaced");
});

function describe(sfu: SfuAssignment | undefined): string {
  if (!sfu) return "peer to peer";
  if (sfu.kind === "JanusVideoRoom") {
    // Narrowed: the Janus fields are there.
    return `${sfu.node} room ${sfu.room}, token until ${new Date(sfu.tokenExpiresAt * 1000).toISOString()}`;
  }
  return `${sfu.node} (peer to peer, generation ${sfu.generation ?? "unknown"})`;
}

const onJanus: JanusVideoRoomSfu = {
  node: "sfu-a",
  url: "ws://127.0.0.2:8188",
  kind: "JanusVideoRoom",
  generation: 2,
  room: "default.standup.1a2b3c4d",
  pin: "pin",
  token: "1764590000,janus,janus.plugin.videoroom:c2lnbmF0dXJl",
  tokenExpiresAt: 1764590000,
};
client.handle({ type: "sfuReassigned", sfu: onJanus });
console.log(client.mediaMode === "sfu" ? "through the SFU" : "mesh");

const stale: JanusVideoRoomSfu = {
  ...onJanus,
  // @ts-expect-error the generation is a number
  generation: "1",
};
// @ts-expect-error an sfuReassigned without its sfu
client.handle({ type: "sfuReassigned" });
// @ts-expect-error a Janus assignment needs its room, pin and token
const incomplete: JanusVideoRoomSfu = { node: "sfu-a", url: "ws://x", kind: "JanusVideoRoom", generation: 1 };
client.addEventListener("remotestream", (event) => {
  // @ts-expect-error participant ids are strings
  event.detail.participantId.toFixed();
});
// @ts-expect-error not a leave reason
const reason: import("../../signaling/web/switchboard.js").LeaveReason = "timeout";

void client.connect().then((joined) => console.log(joined.participantId, stale, incomplete, reason));
