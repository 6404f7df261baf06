// Drives two demo pages (served by `switchboard-signaling serve --demo`) through a call whose
// media goes through a Janus SFU, then through one or more SFU failovers, and prints what
// happened as JSON; the Rust test (tests/tests/sfu_call.rs) asserts on it and times the
// detection part from the apiserver. Runs inside the test's network namespace.
//
//   node sfu_call.mjs '{"pages": [url1, url2], "node": "sfu-a", "screenshot": path,
//                       "failovers": [{"killPid": 123, "to": "sfu-b"}, ...]}'
//
// Each failover SIGKILLs the Janus that carries the room, waits until both pages got
// `sfuReassigned` for `to`, then until both decode frames through `to`. Times are Unix epoch
// milliseconds, so the test can line them up with what it saw on the apiserver.
//
// Needs PLAYWRIGHT_DIR (a directory with node_modules/playwright-core) and CHROMIUM.

import { createRequire } from "node:module";

const config = JSON.parse(process.argv[2]);
const require = createRequire(`${process.env.PLAYWRIGHT_DIR}/`);
const { chromium } = require("playwright-core");
const timeout = config.timeoutMs ?? 30000;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM,
  args: [
    "--no-sandbox",
    "--allow-loopback-in-peer-connection",
    // Host candidates as plain addresses, not mDNS names nobody here can resolve.
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
  ],
});
const result = { ok: false, runs: [] };
const logs = config.pages.map(() => []);
const pages = [];

const all = (f, arg) => Promise.all(pages.map((p) => p.evaluate(f, arg)));

// Waits until every page decodes frames from every other page's participant through `node`,
// and the count still rises a second later; returns when the first frames were seen and what
// each page saw then and after.
async function mediaFlows(ids, node) {
  const deadline = Date.now() + timeout;
  let first = null;
  for (;;) {
    const seen = await all(() => window.demo.sfuInbound());
    const ready = seen.every((inbound, i) =>
      ids.filter((_, j) => j !== i).every((id) => inbound[id]?.node === node && inbound[id].frames > 0));
    if (ready && first === null) first = { at: Date.now(), seen };
    if (first && Date.now() - first.at >= 1000) {
      return { firstFrameAt: first.at, before: first.seen, after: seen };
    }
    if (Date.now() > deadline) throw new Error(`no media through ${node} within ${timeout} ms: ${JSON.stringify(seen)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 720 } });
  for (const [i, url] of config.pages.entries()) {
    const page = await context.newPage();
    page.on("console", (m) => logs[i].push(m.text()));
    page.on("pageerror", (e) => logs[i].push(`pageerror: ${e.message}`));
    await page.goto(url);
    await page.waitForFunction(() => window.demo?.client?.state === "joined", null, { timeout });
    // When each `sfuReassigned` reached the page (the client only emits the ones it applies).
    await page.evaluate(() => {
      window.e2e = { reassigned: [], errors: [] };
      window.demo.client.addEventListener("sfuerror", (e) => window.e2e.errors.push(`${e.detail.code} ${e.detail.message}`));
      window.demo.client.addEventListener("sfureassigned", (e) =>
        window.e2e.reassigned.push({ at: Date.now(), node: e.detail.sfu.node, generation: e.detail.sfu.generation }));
    });
    pages.push(page);
  }
  const ids = await all(() => window.demo.client.participantId);
  result.participantIds = ids;
  result.modes = await all(() => window.demo.client.mediaMode);
  result.first = await mediaFlows(ids, config.node);
  result.sfuLabel = await all(() => document.getElementById("sfu").textContent);
  if (config.screenshot) {
    // Both videos (the local one and the one through the SFU) have rendered frames by now.
    await pages[0].screenshot({ path: config.screenshot });
  }
  result.errorsBeforeKill = await all(() => [...window.e2e.errors]);
  for (const { killPid, to } of config.failovers ?? []) {
    const killedAt = Date.now();
    process.kill(killPid, "SIGKILL");
    await Promise.all(pages.map((p) =>
      p.waitForFunction((node) => window.e2e.reassigned.some((r) => r.node === node), to, { timeout, polling: 20 })));
    const reassigned = await all((node) => window.e2e.reassigned.find((r) => r.node === node), to);
    const flow = await mediaFlows(ids, to);
    result.runs.push({ to, killedAt, reassigned, ...flow });
  }
  result.participantIdsAfter = await all(() => window.demo.client.participantId);
  result.ok = true;
} catch (error) {
  result.error = String(error?.stack ?? error);
  result.logs = logs;
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
