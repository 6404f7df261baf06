// The demo app: joins a room through Switchboard and calls everyone in it with WebRTC. When the
// room is on a `JanusVideoRoom` SFU the client carries the media through it (SFU mode: the page
// shows which SFU and one video per participant, and follows a reassignment); otherwise the
// page calls everyone peer to peer. Media is the camera and microphone when allowed, otherwise
// a generated canvas stream; in peer-to-peer calls a data channel carries pings (round trips
// are shown) and chat.
//
// URL parameters: room (default "demo"), user (default random), name, media=auto|canvas,
// relay=1 (force TURN: iceTransportPolicy "relay"), token (a join token; without it the page
// asks dev mode's /dev/token, which only `switchboard-signaling dev` serves).
//
// `window.demo` exposes the state for automated tests.

import { SwitchboardClient } from "/switchboard.js";

const params = new URLSearchParams(location.search);
const room = params.get("room") || "demo";
const user = params.get("user") || `guest-${Math.random().toString(36).slice(2, 8)}`;
const name = params.get("name") || user;
const forceRelay = params.get("relay") === "1";
const wantCanvas = params.get("media") === "canvas";
const givenToken = params.get("token");

const $ = (id) => document.getElementById(id);
const log = (text) => {
  const line = `${new Date().toISOString().slice(11, 23)} ${text}\n`;
  $("log").textContent += line;
  $("log").scrollTop = $("log").scrollHeight;
};

const demo = {
  client: null,
  peers: new Map(), // participant id -> { pc, channel, pending: [], tile }
  roundTrips: 0,
  chat: [],
  resumes: 0,
  left: [], // participantLeft messages seen
  sfuVideos: new Map(), // participant id -> { tile, node } in SFU mode
  /** SFU mode: frames decoded and the SFU's port, per remote participant. */
  async sfuInbound() {
    const out = {};
    for (const [id, { node, pc }] of this.sfuVideos) {
      if (pc.connectionState === "closed") continue;
      const stats = await pc.getStats();
      let frames = 0;
      let port = null;
      stats.forEach((s) => {
        if (s.type === "inbound-rtp" && s.kind === "video") frames += s.framesDecoded ?? 0;
        if (s.type === "transport" && s.selectedCandidatePairId) {
          const pair = stats.get(s.selectedCandidatePairId);
          const remote = pair && stats.get(pair.remoteCandidateId);
          if (remote) port = remote.port;
        }
      });
      out[id] = { node, frames, port };
    }
    return out;
  },
  /** Sends a ping on every open data channel; the answer counts a round trip. */
  ping() {
    for (const peer of this.peers.values()) {
      if (peer.channel?.readyState === "open") peer.channel.send(JSON.stringify({ ping: performance.now() }));
    }
  },
  states() {
    return Object.fromEntries([...this.peers].map(([id, p]) => [id, p.pc.connectionState]));
  },
  relayUsed() {
    return Promise.all([...this.peers.values()].map(async (p) => {
      const stats = await p.pc.getStats();
      let pair = null;
      stats.forEach((s) => {
        if (s.type === "transport" && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId);
      });
      if (!pair) return null;
      const local = stats.get(pair.localCandidateId);
      return local ? local.candidateType : null;
    }));
  },
  dropSocket() {
    this.client.dropConnection();
  },
};
window.demo = demo;

async function fetchToken() {
  if (givenToken) return givenToken;
  const query = new URLSearchParams({ room, user, name });
  const response = await fetch(`/dev/token?${query}`);
  if (!response.ok) throw new Error(`token: ${response.status} ${await response.text()}`);
  return (await response.json()).token;
}

function canvasStream() {
  const canvas = document.createElement("canvas");
  canvas.width = 320;
  canvas.height = 240;
  const g = canvas.getContext("2d");
  let frame = 0;
  setInterval(() => {
    frame += 1;
    g.fillStyle = `hsl(${(frame * 3) % 360} 70% 45%)`;
    g.fillRect(0, 0, 320, 240);
    g.fillStyle = "#fff";
    g.font = "28px sans-serif";
    g.fillText(user, 20, 60);
    g.fillText(`frame ${frame}`, 20, 110);
  }, 66);
  return canvas.captureStream(15);
}

async function localMedia() {
  if (!wantCanvas && navigator.mediaDevices?.getUserMedia) {
    try {
      return await navigator.mediaDevices.getUserMedia({ video: true, audio: true });
    } catch (error) {
      log(`camera unavailable (${error.name}); using a generated stream`);
    }
  }
  return canvasStream();
}

function renderParticipants() {
  const list = $("participants");
  list.textContent = "";
  for (const p of demo.client.participants.values()) {
    const li = document.createElement("li");
    const state = demo.peers.get(p.id)?.pc.connectionState;
    li.textContent = `${p.name || p.user} (${p.id})${state ? ` · ${state}` : ""}`;
    if (p.id === demo.client.participantId) li.className = "you";
    list.appendChild(li);
  }
}

function tileFor(id) {
  const tile = document.createElement("div");
  tile.className = "tile";
  tile.innerHTML = `<video autoplay playsinline></video><div class="label"></div>`;
  $("videos").appendChild(tile);
  return tile;
}

function setTileLabel(id) {
  const peer = demo.peers.get(id);
  if (!peer) return;
  const who = demo.client.participants.get(id);
  const state = peer.pc.connectionState;
  const label = peer.tile.querySelector(".label");
  label.textContent = `${who ? who.name || who.user : id}: `;
  const span = document.createElement("span");
  span.className = `state-${state}`;
  span.textContent = state;
  label.appendChild(span);
}

function wireChannel(id, channel) {
  const peer = demo.peers.get(id);
  if (peer) peer.channel = channel;
  channel.onopen = () => channel.send(JSON.stringify({ ping: performance.now() }));
  channel.onmessage = (event) => {
    const message = JSON.parse(event.data);
    if (message.ping !== undefined) {
      channel.send(JSON.stringify({ pong: message.ping }));
    } else if (message.pong !== undefined) {
      demo.roundTrips += 1;
      $("roundtrips").textContent =
        `${demo.roundTrips} round trip(s), last ${(performance.now() - message.pong).toFixed(1)} ms`;
    } else if (message.chat !== undefined) {
      demo.chat.push(message.chat);
      const li = document.createElement("li");
      li.textContent = message.chat;
      $("chatlog").appendChild(li);
    }
  };
}

function createPeer(id, stream) {
  const pc = new RTCPeerConnection({
    iceServers: demo.client.iceServers,
    iceTransportPolicy: forceRelay ? "relay" : "all",
  });
  const peer = { pc, channel: null, pending: [], tile: tileFor(id) };
  demo.peers.set(id, peer);
  for (const track of stream.getTracks()) pc.addTrack(track, stream);
  pc.onicecandidate = (event) => {
    if (event.candidate) demo.client.sendCandidate(id, event.candidate);
  };
  pc.ontrack = (event) => {
    peer.tile.querySelector("video").srcObject = event.streams[0];
  };
  pc.ondatachannel = (event) => wireChannel(id, event.channel);
  pc.onconnectionstatechange = () => {
    log(`peer ${id}: ${pc.connectionState}`);
    setTileLabel(id);
    renderParticipants();
  };
  setTileLabel(id);
  return peer;
}

function closePeer(id) {
  const peer = demo.peers.get(id);
  if (!peer) return;
  peer.pc.close();
  peer.tile.remove();
  demo.peers.delete(id);
}

async function call(id, stream) {
  const peer = demo.peers.get(id) ?? createPeer(id, stream);
  if (!peer.channel) wireChannel(id, peer.pc.createDataChannel("demo"));
  await peer.pc.setLocalDescription(await peer.pc.createOffer());
  demo.client.sendOffer(id, peer.pc.localDescription.sdp);
}

async function main() {
  $("room").textContent = room;
  const stream = await localMedia();
  $("local").srcObject = stream;
  const wsUrl = `${location.origin.replace(/^http/, "ws")}/v1/ws`;
  const client = new SwitchboardClient({
    url: wsUrl,
    token: fetchToken,
    media: stream,
    iceTransportPolicy: forceRelay ? "relay" : "all",
  });
  demo.client = client;
  const sfuMode = () => client.carriesMedia(client.sfu);
  const showSfu = (sfu) => {
    $("sfu").textContent = sfu ? `${sfu.node} · ${sfu.url}` : "none (peer to peer)";
    $("calls-title").textContent = sfuMode() ? `Calls (media through SFU ${sfu.node})` : "Calls (peer to peer)";
  };

  client.addEventListener("state", (e) => {
    $("signaling-state").textContent = e.detail;
    log(`signaling: ${e.detail}`);
  });
  client.addEventListener("joined", (e) => {
    const joined = e.detail;
    $("me").textContent = `${name} (${joined.participantId})`;
    showSfu(client.sfu);
    renderParticipants();
    if (sfuMode()) return; // the client publishes and subscribes through the SFU
    if (joined.resumed) {
      demo.resumes += 1;
      log(`resumed as ${joined.participantId}; calls kept`);
      return;
    }
    // A newcomer calls everyone already here; they answer.
    for (const p of joined.participants) {
      if (p.id !== joined.participantId) call(p.id, stream);
    }
  });
  client.addEventListener("reset", () => {
    log("session could not be resumed; starting over");
    for (const id of [...demo.peers.keys()]) closePeer(id);
  });
  client.addEventListener("participantjoined", (e) => {
    log(`${e.detail.participant.user} joined`);
    renderParticipants();
  });
  client.addEventListener("participantleft", (e) => {
    demo.left.push(e.detail);
    log(`${e.detail.id} left (${e.detail.reason})`);
    closePeer(e.detail.id);
    renderParticipants();
  });
  client.addEventListener("offer", async (e) => {
    if (sfuMode()) return;
    const { from, sdp } = e.detail;
    const peer = demo.peers.get(from) ?? createPeer(from, stream);
    await peer.pc.setRemoteDescription({ type: "offer", sdp });
    for (const c of peer.pending.splice(0)) await peer.pc.addIceCandidate(c);
    await peer.pc.setLocalDescription(await peer.pc.createAnswer());
    client.sendAnswer(from, peer.pc.localDescription.sdp);
  });
  client.addEventListener("answer", async (e) => {
    const peer = demo.peers.get(e.detail.from);
    if (!peer) return;
    await peer.pc.setRemoteDescription({ type: "answer", sdp: e.detail.sdp });
    for (const c of peer.pending.splice(0)) await peer.pc.addIceCandidate(c);
  });
  client.addEventListener("candidate", async (e) => {
    const { from, candidate, sdpMid, sdpMLineIndex } = e.detail;
    const init = { candidate, sdpMid, sdpMLineIndex };
    const peer = demo.peers.get(from) ?? createPeer(from, stream);
    if (peer.pc.remoteDescription) await peer.pc.addIceCandidate(init);
    else peer.pending.push(init);
  });
  client.addEventListener("resync", (e) => {
    log("signaling state was resynchronised; renegotiating");
    const present = new Set(e.detail.participants.map((p) => p.id));
    for (const id of [...demo.peers.keys()]) if (!present.has(id)) closePeer(id);
    renderParticipants();
  });
  client.addEventListener("iceservers", (e) => {
    for (const peer of demo.peers.values()) {
      peer.pc.setConfiguration({ ...peer.pc.getConfiguration(), iceServers: e.detail.iceServers });
    }
  });
  client.addEventListener("sfureassigned", (e) => {
    log(`room moved to SFU ${e.detail.sfu.node} (generation ${e.detail.sfu.generation ?? "?"})`);
    showSfu(e.detail.sfu);
  });
  client.addEventListener("sfustate", (e) => {
    log(`SFU ${e.detail.node}: ${e.detail.state}`);
    $("sfu-state").textContent = e.detail.state;
  });
  client.addEventListener("sfuerror", (e) => log(`SFU error ${e.detail.code ?? ""}: ${e.detail.message}`));
  client.addEventListener("remotestream", (e) => {
    const { participantId, stream: remote, node, pc } = e.detail;
    const entry = demo.sfuVideos.get(participantId) ?? { tile: tileFor(participantId) };
    Object.assign(entry, { node, pc });
    demo.sfuVideos.set(participantId, entry);
    entry.tile.querySelector("video").srcObject = remote;
    const who = client.participants.get(participantId);
    entry.tile.querySelector(".label").textContent = `${who ? who.name || who.user : participantId} · via ${node}`;
  });
  client.addEventListener("remotegone", (e) => {
    const entry = demo.sfuVideos.get(e.detail.participantId);
    // A reassignment replaces the stream under the same participant id: keep the tile then.
    if (entry && entry.node === e.detail.node && client.sfu?.node === e.detail.node) {
      entry.tile.remove();
      demo.sfuVideos.delete(e.detail.participantId);
    }
  });
  client.addEventListener("error", (e) => log(`error ${e.detail.code}: ${e.detail.message}`));

  $("drop").onclick = () => demo.dropSocket();
  $("send").onclick = () => {
    const text = $("chat").value;
    $("chat").value = "";
    for (const peer of demo.peers.values()) {
      if (peer.channel?.readyState === "open") peer.channel.send(JSON.stringify({ chat: `${name}: ${text}` }));
    }
  };
  try {
    await client.connect();
  } catch (error) {
    log(`cannot join: ${error.message}`);
    $("signaling-state").textContent = `refused: ${error.message}`;
  }
}

main();
