// @ts-check
// Drives the redrive console in Debian's chromium with playwright-core (never a downloaded
// browser). Started by tests/console_browser.rs, which runs the servers, seeds the dead letters
// and checks Redis afterwards. Prints one JSON line per passed step ({"step": …}) and a last
// line {"done": true, …} with what the Rust side checks; any failure throws (exit code 1).
// Type-checked with `npm run check` (tsc, strict).

import { chromium } from "playwright-core";
import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import assert from "node:assert/strict";

/** @typedef {import("playwright-core").Page} Page */
/** @typedef {import("playwright-core").BrowserContext} BrowserContext */

/**
 * An environment variable the Rust test sets.
 * @param {string} name
 * @returns {string}
 */
function need(name) {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set: run this through tests/console_browser.rs`);
  return v;
}

const BASE = need("CONSOLE_URL");
const SHORT = need("SHORT_URL");
const SHOTS = need("SCREENSHOTS");
const ADMIN = need("ADMIN_TOKEN");
const ACME_VIEWER = need("ACME_VIEWER_TOKEN");
const ACME_OPS = need("ACME_OPS_TOKEN");
mkdirSync(SHOTS, { recursive: true });

/** @param {string} step @param {Record<string, unknown>} [extra] */
function passed(step, extra = {}) {
  console.log(JSON.stringify({ step, ...extra }));
}

/** @param {Page} page @param {string} name */
async function shot(page, name) {
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
}

/** Logs in on the console at `base` with `token`. @param {Page} page @param {string} base @param {string} token */
async function login(page, base, token) {
  await page.goto(`${base}/login`);
  await page.fill("#token", token);
  await page.click("button[type=submit]");
  await page.waitForSelector("header.top");
}

/**
 * The command id a command page shows (its URL's last segment).
 * @param {Page} page
 */
function commandId(page) {
  const m = /\/commands\/([^/?#]+)/.exec(page.url());
  assert.ok(m && m[1], `not a command page: ${page.url()}`);
  return decodeURIComponent(m[1]);
}

/**
 * Clicks the export link of a dead-letters page and reads the file it downloads: its name
 * and its lines, parsed.
 * @param {Page} page
 * @returns {Promise<{ name: string, lines: Record<string, any>[] }>}
 */
async function exportFile(page) {
  const [download] = await Promise.all([page.waitForEvent("download"), page.click("#export")]);
  const path = await download.path();
  assert.ok(path, "the export was saved");
  const text = readFileSync(path, "utf8");
  assert.ok(text.endsWith("\n"), "the export ends with a whole line");
  const lines = text.split("\n").filter((l) => l !== "").map((l) => JSON.parse(l));
  return { name: download.suggestedFilename(), lines };
}

/**
 * Waits (bounded) until `check` holds, polling every 200 ms.
 * @param {() => Promise<boolean>} check
 * @param {string} what
 * @param {number} [ms]
 */
async function until(check, what, ms = 30000) {
  const end = Date.now() + ms;
  for (;;) {
    if (await check()) return;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

const browser = await chromium.launch({
  executablePath: need("CHROMIUM"),
  headless: true,
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});

/** @type {Record<string, unknown>} */
const report = { done: true };
try {
  const ctx = await browser.newContext({ viewport: { width: 1440, height: 900 }, colorScheme: "light" });
  const page = await ctx.newPage();
  page.setDefaultTimeout(20000);
  page.on("dialog", (d) => void d.accept());
  /** @type {string[]} */
  const consoleErrors = [];
  page.on("console", (m) => {
    // A 4xx page (a refused login) is logged by the browser itself; script errors are not.
    if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) consoleErrors.push(m.text());
  });

  // Not logged in: every page sends the browser to the login page; a bad token is refused.
  await page.goto(`${BASE}/dead-letters`);
  assert.match(page.url(), /\/login\?next=/);
  await page.fill("#token", "not-a-token");
  await page.click("button[type=submit]");
  await page.waitForSelector("#login-error");
  await shot(page, "01-login");
  await page.fill("#token", ADMIN);
  await page.click("button[type=submit]");
  await page.waitForSelector("table#dead-letters");
  assert.match(page.url(), /\/redrive\/dead-letters$/, "back to where the visit was going");
  const cookies = await ctx.cookies();
  const session = cookies.find((c) => c.name === "redrive_session");
  assert.ok(session, "a session cookie");
  assert.equal(session.httpOnly, true);
  assert.equal(session.sameSite, "Strict");
  assert.equal(session.path, "/redrive");
  passed("login");

  // Overview: every tenant with its figures.
  await page.click("header.top nav a[href='/redrive/']");
  await page.waitForSelector("table#tenants");
  const tenants = await page.$$eval("table#tenants tbody tr[data-tenant]", (rows) =>
    rows.map((r) => r.getAttribute("data-tenant")),
  );
  assert.deepEqual(tenants, ["acme", "globex", "initech", "umbrella"]);
  assert.equal((await page.textContent("#total-dead-letters"))?.trim(), "21");
  await shot(page, "02-overview");
  passed("overview");

  // Dead letters: filter by tenant, group by fingerprint.
  await page.goto(`${BASE}/dead-letters`);
  await shot(page, "03-dead-letters");
  await page.selectOption("#f-tenant", "acme");
  await page.click("form[data-filter] button[type=submit]");
  await page.waitForURL(/tenant=acme/);
  const rowTenants = await page.$$eval("table#dead-letters tbody tr td:nth-child(3)", (tds) =>
    tds.map((td) => td.textContent?.trim()),
  );
  assert.deepEqual(rowTenants, ["acme", "acme", "acme", "acme"]);
  // A payload field's value: globex's tickets of customer globex-c0 (tickets 0, 3, 6, 9).
  await page.goto(`${BASE}/dead-letters`);
  await page.fill("#f-payload", "customer=globex-c0");
  await page.click("form[data-filter] button[type=submit]");
  await page.waitForURL(/payload=customer%3Dglobex-c0/);
  const byPayload = await page.$$eval("table#dead-letters tbody tr td:nth-child(5)", (tds) =>
    tds.map((td) => td.textContent?.trim()).sort(),
  );
  assert.deepEqual(byPayload, ["globex-bad-0", "globex-bad-3", "globex-bad-6", "globex-bad-9"]);
  // The export carries the filter: a file of exactly these, payloads included for the admin.
  await page.selectOption("#f-tenant", "globex");
  await page.click("form[data-filter] button[type=submit]");
  await page.waitForURL(/tenant=globex/);
  const exported = await exportFile(page);
  assert.match(exported.name, /^dead-letters-globex-\d{8}T\d{6}Z\.jsonl$/);
  assert.deepEqual(exported.lines.map((l) => l.task_id).sort(), byPayload);
  assert.ok(exported.lines.every((l) => l.tenant === "globex" && l.payload?.customer === "globex-c0"));
  passed("export");
  await page.goto(`${BASE}/dead-letters?tenant=acme`);
  await page.click("nav.tabs a:has-text('Group by fingerprint')");
  await page.waitForSelector("table#groups");
  assert.match((await page.textContent("table#groups tbody"))?? "", /schema validation/);
  await shot(page, "04-groups");
  passed("filter");

  // One dead letter: the payload, the attempts, what to do.
  await page.goto(`${BASE}/dead-letters?tenant=acme`);
  await page.click("table#dead-letters tbody tr:first-child td:nth-child(4) a");
  await page.waitForSelector("#payload");
  assert.match((await page.textContent("#payload")) ?? "", /malformed_output/);
  assert.match((await page.textContent("#recommended")) ?? "", /\S/);
  await shot(page, "05-dead-letter");
  passed("dead-letter");

  // The review of one dead letter: assign it, note it; its state and log show on its page and
  // in the list.
  await page.goto(`${BASE}/dead-letters?tenant=initech`);
  await page.click("table#dead-letters tbody tr:first-child td:nth-child(4) a");
  await page.waitForSelector("#review");
  assert.equal(await page.getAttribute("#review [data-review-state]", "data-review-state"), "new");
  const reviewed = new URL(page.url()).pathname.split("/").slice(-2).map(decodeURIComponent).join("/");
  await page.fill("#assign-to", "ana");
  await page.fill("#assign-reason", "on call");
  await page.click("#assign-form button[type=submit]");
  await page.waitForSelector("#sent.ok");
  assert.equal((await page.textContent("#review-assignee"))?.trim(), "ana");
  assert.equal(await page.getAttribute("#review [data-review-state]", "data-review-state"), "in_review");
  await page.fill("#note-text", "looked at the schema: v2 fields missing");
  await page.click("#note-form button[type=submit]");
  await page.waitForSelector("#sent.ok");
  assert.match((await page.textContent("#review-log")) ?? "", /looked at the schema: v2 fields missing/);
  assert.equal(await page.$$eval("#review-log li", (l) => l.length), 2);
  await shot(page, "05b-review");
  await page.goto(`${BASE}/dead-letters?tenant=initech`);
  const states = await page.$$eval("table#dead-letters tbody tr td.review [data-review-state]", (s) =>
    s.map((x) => x.getAttribute("data-review-state")).sort(),
  );
  assert.deepEqual(states, ["in_review", "new"]);
  assert.match((await page.textContent("table#dead-letters tbody")) ?? "", /ana/);
  report.reviewed = reviewed;
  passed("review");

  // The archive: nothing archived yet (no cap reached), a page that says so.
  await page.click("header.top nav a:has-text('Archive')");
  await page.waitForSelector("table#archive");
  assert.match((await page.textContent("table#archive tbody")) ?? "", /Nothing archived matches/);
  passed("archive");

  // The replay wizard: select acme's triage dead letters (select-all), patch, dry run, confirm,
  // watch.
  await page.goto(`${BASE}/dead-letters?tenant=acme&kind=triage`);
  await page.check("input[data-select-all]");
  assert.equal((await page.textContent("[data-selected-count]"))?.trim(), "3 selected");
  await page.click("button[value=replay]");
  await page.waitForSelector("#dry-run");
  assert.equal((await page.textContent("#dry-selected"))?.trim(), "3");
  await page.fill("#patch", "not json");
  await page.click("#update-dry-run");
  await page.waitForSelector("#dry-run-error");
  assert.match((await page.textContent("#dry-run-error")) ?? "", /not JSON/);
  await page.fill("#patch", '{"simulate": "ok", "schema": 2}');
  await page.click("#update-dry-run");
  await page.waitForSelector("#dry-sample");
  assert.match((await page.textContent("#dry-sample")) ?? "", /"simulate": "ok"/);
  await shot(page, "06-replay-wizard");
  await page.fill("#reason", "schema fixed, replaying with the new field");
  await page.click("#replay-confirm");
  await page.waitForURL(/\/commands\//);
  report.replay_command = commandId(page);
  // The script follows the command live and reloads once it is done.
  await page.waitForSelector("#result", { timeout: 60000 });
  assert.match((await page.textContent("#result")) ?? "", /ok/);
  assert.equal((await page.textContent("#replayed"))?.trim(), "3");
  await shot(page, "07-replay-done");
  passed("replay");

  // A slow replay (one a second) of globex's dead letters, cancelled while it runs.
  await page.goto(`${BASE}/dead-letters?tenant=globex`);
  await page.click("a:has-text('Replay all matching')");
  await page.waitForSelector("#dry-run");
  assert.equal((await page.textContent("#dry-selected"))?.trim(), "12");
  await page.fill("#patch", '{"simulate": "ok"}');
  await page.fill("#rate", "1");
  await page.click("#update-dry-run");
  await page.waitForSelector("#dry-sample");
  await page.fill("#reason", "slow fix");
  await page.click("#replay-confirm");
  await page.waitForURL(/\/commands\//);
  report.cancelled_command = commandId(page);
  await until(async () => {
    const n = Number((await page.textContent("#replayed"))?.trim() ?? "0");
    return n >= 1 && (await page.$("#cancel-button")) !== null;
  }, "the live progress shows a replayed dead letter");
  await shot(page, "08-replay-progress");
  await page.fill("#cancel-reason", "wrong patch");
  await page.click("#cancel-button");
  await page.waitForSelector("#result", { timeout: 60000 });
  assert.match((await page.textContent("#result")) ?? "", /cancelled/);
  passed("cancel");

  // Resumed from the cancelled command's page at full speed: the new command's page follows
  // the job to its end.
  await page.waitForSelector("#resume-button");
  assert.equal(await page.inputValue("#resume-rate"), "1", "the job's own rate to start with");
  await shot(page, "08b-replay-resume");
  await page.fill("#resume-reason", "patch checked, going on");
  await page.fill("#resume-rate", "0");
  await page.click("#resume-button");
  await page.waitForURL((u) => /\/commands\//.test(u.pathname) && !u.pathname.endsWith(`/${report.cancelled_command}`));
  report.resumed_command = commandId(page);
  await page.waitForSelector("#result", { timeout: 60000 });
  assert.match((await page.textContent("#result")) ?? "", /ok/);
  assert.equal((await page.textContent("#replayed"))?.trim(), "12", "the whole job, before and after the cancel");
  assert.equal((await page.textContent("#resumed-job"))?.trim(), report.cancelled_command);
  passed("resume");

  // Breakers: an admin holds one open, then closes it.
  await page.goto(`${BASE}/breakers`);
  await page.fill("tr[data-tenant=initech] input[name=reason]", "incident 7");
  await page.click("tr[data-tenant=initech] button:has-text('Open')");
  await page.waitForSelector("#sent.ok");
  assert.match((await page.textContent("tr[data-tenant=initech]")) ?? "", /open/);
  await shot(page, "09-breakers");
  await page.fill("tr[data-tenant=initech] input[name=reason]", "incident 7 over");
  await page.click("tr[data-tenant=initech] button:has-text('Close')");
  await page.waitForSelector("#sent.ok");
  assert.match((await page.textContent("tr[data-tenant=initech]")) ?? "", /closed/);
  passed("breaker");

  // Purge: from the tenant's dead letters, count first, then type the tenant's name.
  await page.goto(`${BASE}/dead-letters?tenant=umbrella`);
  await page.click("#purge-link");
  await page.waitForSelector("#purge-select");
  assert.equal(await page.inputValue("#p-tenant"), "umbrella");
  await page.fill("#p-older", "0s");
  await page.click("#purge-count");
  await page.waitForSelector("#purge-would");
  assert.equal((await page.textContent("#purge-would"))?.trim(), "3");
  await page.fill("#p-confirm", "umbrella");
  await page.fill("#p-reason", "test tenant retired");
  await shot(page, "09b-purge");
  await page.click("#purge-submit");
  await page.waitForURL(/\/commands\//);
  report.purge_command = commandId(page);
  await page.waitForSelector("#result");
  assert.match((await page.textContent("#result-message")) ?? "", /purged 3/);
  passed("purge");

  // Task lookup.
  await page.goto(`${BASE}/tasks`);
  await page.selectOption("#t-tenant", "acme");
  await page.fill("#t-id", "acme-ok");
  await page.click("form[data-filter] button[type=submit]");
  await page.waitForSelector("#task-state");
  assert.equal((await page.textContent("#task-state"))?.trim(), "done");
  await shot(page, "10-task");
  passed("task");

  // The audit trail names the admin.
  await page.goto(`${BASE}/audit`);
  await page.waitForSelector("table#audit");
  assert.match((await page.textContent("table#audit")) ?? "", /admin/);
  await shot(page, "11-audit");
  passed("audit");

  // Keyboard: "/" focuses the filter, j moves to the first row.
  await page.goto(`${BASE}/dead-letters`);
  await page.keyboard.press("/");
  assert.equal(await page.evaluate(() => document.activeElement?.id), "f-tenant");
  await page.evaluate(() => /** @type {HTMLElement | null} */ (document.activeElement)?.blur());
  await page.keyboard.press("j");
  assert.equal(await page.$$eval("table#dead-letters tr.current", (r) => r.length), 1);
  passed("keyboard");

  // CSRF: the session's cookie alone changes nothing, in the console or the API.
  const initech = await page.request.get(`${BASE}/api/v1/dead-letters?tenant=initech`);
  assert.equal(initech.status(), 200, "a read with the session cookie");
  /** @type {{ entries: { id: string }[] }} */
  const list = await initech.json();
  const victim = list.entries[0]?.id ?? "";
  const form = await page.request.post(`${BASE}/dead-letters/bulk`, {
    form: { action: "resolve", id: victim, reason: "forged" },
    maxRedirects: 0,
  });
  assert.equal(form.status(), 403, "a console form without the csrf field");
  const api = await page.request.post(`${BASE}/api/v1/dead-letters/resolve`, {
    data: { ids: [victim], reason: "forged" },
  });
  assert.equal(api.status(), 403, "an API change with the cookie but no X-CSRF-Token");
  assert.equal((await api.json()).error.code, "csrf");
  passed("csrf");

  // Logout ends the session: the next page is the login page.
  await page.click("header.top button:has-text('Log out')");
  await page.waitForSelector("#token");
  await page.goto(`${BASE}/`);
  assert.match(page.url(), /\/login/);
  const after = await page.request.get(`${BASE}/api/v1/me`);
  assert.equal(after.status(), 401, "the ended session's cookie no longer works");
  passed("logout");
  assert.deepEqual(consoleErrors, [], "no script errors");

  // A tenant-scoped viewer: only its tenant, payloads hidden, no actions; another tenant's
  // dead letter is a 404.
  const scoped = await browser.newContext({ viewport: { width: 1440, height: 900 }, colorScheme: "dark" });
  const sp = await scoped.newPage();
  sp.setDefaultTimeout(20000);
  await login(sp, BASE, ACME_VIEWER);
  const seen = await sp.$$eval("table#tenants tbody tr[data-tenant]", (rows) =>
    rows.map((r) => r.getAttribute("data-tenant")),
  );
  assert.deepEqual(seen, ["acme"]);
  assert.equal((await sp.textContent("#total-dead-letters"))?.trim(), "1", "acme's count only");
  await shot(sp, "12-scoped-overview-dark");
  await sp.goto(`${BASE}/dead-letters`);
  const options = await sp.$$eval("#f-tenant option", (o) => o.map((x) => x.getAttribute("value")));
  assert.deepEqual(options, ["", "acme"]);
  assert.equal(await sp.$$eval("input[name=id]", (b) => b.length), 0, "a viewer gets no bulk selection");
  assert.equal(await sp.$$eval("table#dead-letters tbody tr", (r) => r.length), 1);
  assert.doesNotMatch((await sp.textContent("main")) ?? "", /globex|initech/);
  // Its dead letter, payload hidden (the viewer may not see payloads), no actions.
  await sp.click("table#dead-letters tbody tr:first-child td:nth-child(3) a");
  await sp.waitForSelector("#h-payload");
  assert.equal(await sp.$("#payload"), null);
  assert.match((await sp.textContent("main")) ?? "", /payload is hidden/);
  assert.doesNotMatch(await sp.content(), /secret-lead-7/);
  assert.equal(await sp.$("button[value=resolve]"), null);
  await shot(sp, "13-scoped-dead-letter-dark");
  const other = await sp.goto(`${BASE}/dead-letters/globex/${encodeURIComponent(victim.split("/")[1] ?? "")}`);
  assert.equal(other?.status(), 404);
  const initechDl = await sp.goto(`${BASE}/dead-letters/${victim.split("/").map(encodeURIComponent).join("/")}`);
  assert.equal(initechDl?.status(), 404, "another tenant's dead letter");
  await shot(sp, "14-scoped-404-dark");
  const replay = await sp.goto(`${BASE}/replay?all=1`);
  assert.equal(replay?.status(), 403, "a viewer cannot open the replay wizard");
  // Its export holds its tenant's dead letters only, payloads hidden as the API hides them.
  await sp.goto(`${BASE}/dead-letters`);
  assert.equal(await sp.$("#purge-link"), null, "purging needs an admin");
  const own = await exportFile(sp);
  assert.match(own.name, /^dead-letters-acme-/);
  assert.deepEqual(own.lines.map((l) => l.task_id), ["acme-score-1"]);
  assert.ok(own.lines.every((l) => l.payload === null && l.hidden.includes("payload")));
  passed("scoped-export");
  passed("scoped");
  await scoped.close();

  // A tenant-scoped operator resolves its tenant's dead letter; the audit names it.
  const ops = await browser.newContext({ viewport: { width: 1440, height: 900 } });
  const op = await ops.newPage();
  op.setDefaultTimeout(20000);
  await login(op, BASE, ACME_OPS);
  await op.goto(`${BASE}/dead-letters`);
  assert.equal(await op.$$eval("input[name=id]", (b) => b.length), 1, "an operator may select");
  await op.click("table#dead-letters tbody tr:first-child td:nth-child(4) a");
  await op.waitForSelector("#payload");
  assert.match((await op.textContent("#payload")) ?? "", /secret-lead-7/, "operators see payloads");
  await op.fill("#one-reason", "handled by acme support");
  await op.click("button[value=resolve]");
  await op.waitForSelector("#result");
  assert.match((await op.textContent("#result")) ?? "", /ok/);
  await op.goto(`${BASE}/breakers`);
  assert.equal(await op.$("button:has-text('Open')"), null, "breakers need an admin");
  passed("scoped-operator");
  await ops.close();

  // A session that ends (1.5 s on the short server): the console goes back to the login page.
  const brief = await browser.newContext();
  const bp = await brief.newPage();
  bp.setDefaultTimeout(20000);
  await login(bp, SHORT, ADMIN);
  await new Promise((r) => setTimeout(r, 2500));
  await bp.goto(`${SHORT}/audit`);
  await bp.waitForSelector("#token");
  assert.match(bp.url(), /ended=1/);
  assert.match((await bp.textContent("main")) ?? "", /session has ended/);
  await shot(bp, "15-session-ended");
  passed("expired");
  await brief.close();
  await ctx.close();
} finally {
  await browser.close();
}
console.log(JSON.stringify(report));
