// Drives two demo pages in headless Chromium through one call and prints what happened as
// JSON; the Rust test (tests/tests/browser.rs) asserts on it. Runs inside the test's network
// namespace, so every packet stays on its loopback.
//
//   node call.mjs '{"pages": [url1, url2], "relay": false, "drop": false, "screenshot": null}'
//
// Needs PLAYWRIGHT_DIR (a directory with node_modules/playwright-core) and CHROMIUM (the
// browser binary).

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
    // Host candidates as plain loopback addresses, not mDNS names nobody here can resolve.
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
  ],
});
const result = { ok: false };
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 720 } });
  const pages = [];
  const logs = [[], []];
  for (const [i, url] of config.pages.entries()) {
    const page = await context.newPage();
    page.on("console", (m) => logs[i].push(m.text()));
    page.on("pageerror", (e) => logs[i].push(`pageerror: ${e.message}`));
    await page.goto(url);
    await page.waitForFunction(() => window.demo?.client?.state === "joined", null, { timeout });
    pages.push(page);
  }
  const [a, b] = pages;
  const connected = () =>
    Object.values(window.demo.states()).some((s) => s === "connected") && window.demo.roundTrips > 0;
  await Promise.all(pages.map((p) => p.waitForFunction(connected, null, { timeout })));
  result.states = await Promise.all(pages.map((p) => p.evaluate(() => window.demo.states())));
  result.roundTrips = await Promise.all(pages.map((p) => p.evaluate(() => window.demo.roundTrips)));
  result.candidateTypes = await Promise.all(pages.map((p) => p.evaluate(() => window.demo.relayUsed())));
  result.sfu = await a.evaluate(() => window.demo.client.sfu);
  if (config.drop) {
    result.participantIdBefore = await a.evaluate(() => window.demo.client.participantId);
    const before = await a.evaluate(() => window.demo.roundTrips);
    await a.evaluate(() => window.demo.dropSocket());
    await a.waitForFunction(() => window.demo.resumes >= 1 && window.demo.client.state === "joined", null, { timeout });
    // The call is still up: another round trip over the same peer connection.
    await a.evaluate(() => window.demo.ping());
    await a.waitForFunction((n) => window.demo.roundTrips > n, before, { timeout });
    result.afterDrop = {
      resumes: await a.evaluate(() => window.demo.resumes),
      states: await Promise.all(pages.map((p) => p.evaluate(() => window.demo.states()))),
      roundTripsA: await a.evaluate(() => window.demo.roundTrips),
      leftSeenByB: await b.evaluate(() => window.demo.left),
      participantIdA: await a.evaluate(() => window.demo.client.participantId),
    };
  }
  if (config.screenshot) {
    // Let the remote video render a frame before the picture.
    await a.waitForTimeout(1500);
    await a.screenshot({ path: config.screenshot });
  }
  result.ok = true;
  result.logs = logs;
} catch (error) {
  result.error = String(error?.stack ?? error);
  result.logs = undefined;
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
