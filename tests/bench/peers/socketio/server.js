// Benchmark peer only: the signaling server a Node team would usually write for WebRTC, on
// socket.io with @socket.io/redis-adapter so that several processes share rooms over Redis.
// It does what Switchboard's join and relay do, in socket.io's idiom:
//   - the client sends its JWT (HS256) in the CONNECT packet's auth payload; the `room` and
//     `sub` claims decide where it may join (refused before the connection is accepted);
//   - "join" (with an ack) puts the socket in its room, tells the room, and acks its id;
//   - "offer" / "answer" / "candidate" with `to` (a socket id) are relayed to that socket,
//     wherever it is connected, with `from` added.
// Environment: PORT, JWT_SECRET, and REDIS_URL (without it the in-memory adapter is used).
"use strict";

const crypto = require("node:crypto");
const http = require("node:http");
const { Server } = require("socket.io");

const port = Number(process.env.PORT);
const secret = process.env.JWT_SECRET;
if (!port || !secret) {
  console.error("server.js: PORT and JWT_SECRET are required");
  process.exit(2);
}

// HS256 compact JWT check: signature, algorithm, a numeric unexpired `exp`, string claims.
function verify(token) {
  if (typeof token !== "string") return null;
  const parts = token.split(".");
  if (parts.length !== 3) return null;
  const expected = crypto.createHmac("sha256", secret).update(`${parts[0]}.${parts[1]}`).digest();
  const given = Buffer.from(parts[2], "base64url");
  if (given.length !== expected.length || !crypto.timingSafeEqual(given, expected)) return null;
  try {
    const header = JSON.parse(Buffer.from(parts[0], "base64url").toString("utf8"));
    const claims = JSON.parse(Buffer.from(parts[1], "base64url").toString("utf8"));
    if (header.alg !== "HS256") return null;
    if (typeof claims.exp !== "number" || claims.exp * 1000 <= Date.now()) return null;
    if (typeof claims.sub !== "string" || typeof claims.room !== "string") return null;
    return claims;
  } catch {
    return null;
  }
}

async function main() {
  const httpServer = http.createServer();
  const io = new Server(httpServer);
  if (process.env.REDIS_URL) {
    const { createAdapter } = require("@socket.io/redis-adapter");
    const { Redis } = require("ioredis");
    const pubClient = new Redis(process.env.REDIS_URL);
    const subClient = pubClient.duplicate();
    await Promise.all([
      new Promise((resolve) => pubClient.once("ready", resolve)),
      new Promise((resolve) => subClient.once("ready", resolve)),
    ]);
    io.adapter(createAdapter(pubClient, subClient));
  }

  io.use((socket, next) => {
    const claims = verify(socket.handshake.auth && socket.handshake.auth.token);
    if (!claims) return next(new Error("unauthorized"));
    socket.data.user = claims.sub;
    socket.data.room = claims.room;
    next();
  });

  io.on("connection", (socket) => {
    const room = socket.data.room;
    socket.on("join", (ack) => {
      socket.join(room);
      socket.data.joined = true;
      socket.to(room).emit("peer-joined", { id: socket.id, user: socket.data.user });
      if (typeof ack === "function") ack({ id: socket.id });
    });
    const relay = (type, field) => {
      socket.on(type, (msg) => {
        if (!socket.data.joined || !msg || typeof msg.to !== "string") return;
        io.to(msg.to).emit(type, { from: socket.id, [field]: msg[field] });
      });
    };
    relay("offer", "sdp");
    relay("answer", "sdp");
    relay("candidate", "candidate");
    socket.on("disconnect", () => {
      if (socket.data.joined) socket.to(room).emit("peer-left", { id: socket.id });
    });
  });

  httpServer.listen(port, "127.0.0.1", () => console.log(`listening on 127.0.0.1:${port}`));
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
