// Drives Switchboard's JavaScript client in SFU mode through real Janus, in headless Chromium,
// and prints what happened as JSON; the Rust test (tests/tests/browser_sfu.rs) asserts on it.
// Runs inside the test's network namespace.
//
// There is no signaling server here: each page gets the messages signaling would send
// (`joined`, `sfuReassigned`) handed straight to `SwitchboardClient.handle`, so the client's
// own SFU mode does the rest (Janus session, publish, subscribe).
//
//   node sfu.mjs '{"participants": ["p-alice", "p-bob"], "sfu": {...}, "failover": null}'
//
// `failover`: { "killPid": <Janus A's pid>, "sfu": {...B...}, "stale": {...} }: after media flows
// through A, SIGKILL A, hand both pages a stale `sfuReassigned` (must be ignored) and then the
// one for B, and wait for frames through B.
//
// Needs PLAYWRIGHT_DIR (a directory with node_modules/playwright-core), CHROMIUM and CLIENT_JS
// (the path of signaling/web/switchboard.js).

import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

const config = JSON.parse(process.argv[2]);
const require = createRequire(`${process.env.PLAYWRIGHT_DIR}/`);
const { chromium } = require("playwright-core");
const timeout = config.timeoutMs ?? 30000;
// Pages load from this origin through request interception: nothing listens there, and
// localhost counts as a secure context, which getUserMedia needs.
const ORIGIN = "http://localhost:9";

const PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>Switchboard SFU test</title></head>
<body><div id="videos"></div>
<script type="module">
import { SwitchboardClient } from "/switchboard.js";
const stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
const client = new SwitchboardClient({ url: "ws://signaling.invalid/v1/ws", token: "unused", media: stream });
const test = { client, remote: {}, sfuStates: [], errors: [], reassigned: 0, gone: [] };
client.addEventListener("remotestream", (e) => {
  test.remote[e.detail.participantId] = { node: e.detail.node, pc: e.detail.pc };
  let video = document.getElementById(e.detail.participantId);
  if (!video) {
    video = Object.assign(document.createElement("video"), { id: e.detail.participantId, autoplay: true, muted: true });
    document.getElementById("videos").appendChild(video);
  }
  video.srcObject = e.detail.stream;
});
client.addEventListener("remotegone", (e) => test.gone.push(e.detail.participantId));
client.addEventListener("sfustate", (e) => test.sfuStates.push(e.detail.node + ":" + e.detail.state));
client.addEventListener("sfuerror", (e) => test.errors.push(String(e.detail.code) + " " + e.detail.message));
client.addEventListener("sfureassigned", () => { test.reassigned += 1; });
// Video received from each remote participant: frames decoded so far, and the SFU's port on
// the selected candidate pair.
test.inbound = async () => {
  const out = {};
  for (const [id, { node, pc }] of Object.entries(test.remote)) {
    if (pc.connectionState === "closed") continue;
    const stats = await pc.getStats();
    let frames = 0, port = null;
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
};
window.test = test;
</script></body></html>`;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM,
  args: [
    "--no-sandbox",
    "--allow-loopback-in-peer-connection",
    // Host candidates as plain addresses; and no Local Network Access checks: the page's
    // origin is intercepted (it has no address), so Chromium would count it as public and
    // block its WebSocket to the SFU on 127.0.0.2.
    "--disable-features=WebRtcHideLocalIpsWithMdns,LocalNetworkAccessChecks",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
  ],
});
const result = { ok: false };
const logs = config.participants.map(() => []);
const started = Date.now();
const pages = [];
const elapsed = () => Date.now() - started;

function joined(participantId, sfu) {
  return {
    type: "joined", v: 1, participantId, room: "sfu-test",
    participants: config.participants.map((id) => ({ id, user: id })),
    sfu, iceServers: [], resumeToken: `rt-${participantId}`, seq: 0, resumed: false,
  };
}

// Waits until every page decodes frames from every other participant through `node`, with
// the count still rising; returns what each page saw.
async function mediaFlows(pages, node) {
  const deadline = Date.now() + timeout;
  let first = null;
  for (;;) {
    const seen = await Promise.all(pages.map((p) => p.evaluate(() => window.test.inbound())));
    const ready = seen.every((inbound, i) =>
      config.participants.filter((_, j) => j !== i).every((id) => inbound[id]?.node === node && inbound[id].frames > 0));
    if (ready && first === null) first = { at: elapsed(), seen };
    if (first && elapsed() - first.at >= 1000) {
      return { firstFrameMs: first.at, before: first.seen, after: seen };
    }
    if (Date.now() > deadline) throw new Error(`no media through ${node} within ${timeout} ms: ${JSON.stringify(seen)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

try {
  const context = await browser.newContext({ viewport: { width: 800, height: 400 } });
  await context.route(`${ORIGIN}/**`, (route) => {
    const path = new URL(route.request().url()).pathname;
    if (path === "/switchboard.js") {
      return route.fulfill({ contentType: "text/javascript", body: readFileSync(process.env.CLIENT_JS, "utf8") });
    }
    if (path === "/") return route.fulfill({ contentType: "text/html", body: PAGE });
    return route.fulfill({ status: 404, body: "not found" });
  });
  for (const [i, participantId] of config.participants.entries()) {
    const page = await context.newPage();
    page.on("console", (m) => logs[i].push(m.text()));
    page.on("pageerror", (e) => logs[i].push(`pageerror: ${e.message}`));
    await page.goto(`${ORIGIN}/`);
    await page.waitForFunction(() => window.test !== undefined, null, { timeout });
    pages.push(page);
  }
  for (const [i, page] of pages.entries()) {
    await page.evaluate((m) => window.test.client.handle(m), joined(config.participants[i], config.sfu));
  }
  result.throughA = await mediaFlows(pages, config.sfu.node);
  result.modes = await Promise.all(pages.map((p) => p.evaluate(() => window.test.client.mediaMode)));
  if (config.failover) {
    const { killPid, sfu, stale } = config.failover;
    result.errorsBeforeKill = await Promise.all(pages.map((p) => p.evaluate(() => [...window.test.errors])));
    const killedAt = elapsed();
    process.kill(killPid, "SIGKILL");
    for (const page of pages) {
      await page.evaluate((m) => window.test.client.handle(m), { type: "sfuReassigned", sfu: stale });
    }
    result.afterStale = await Promise.all(pages.map((p) => p.evaluate(() => ({
      node: window.test.client.sfu.node, reassigned: window.test.reassigned,
    }))));
    for (const page of pages) {
      await page.evaluate((m) => window.test.client.handle(m), { type: "sfuReassigned", sfu });
    }
    result.throughB = await mediaFlows(pages, sfu.node);
    result.killToFirstFrameMs = result.throughB.firstFrameMs - killedAt;
    result.reassigned = await Promise.all(pages.map((p) => p.evaluate(() => window.test.reassigned)));
  }
  result.sfuStates = await Promise.all(pages.map((p) => p.evaluate(() => window.test.sfuStates)));
  result.errors = await Promise.all(pages.map((p) => p.evaluate(() => window.test.errors)));
  result.ok = true;
} catch (error) {
  result.error = String(error?.stack ?? error);
  result.logs = logs;
  result.sfuErrors = await Promise.all(pages.map((p) => p.evaluate(() => window.test.errors).catch(() => null)));
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
