// Drives the migration console in Debian's Chromium (headless, via playwright-core; no browser
// download) against a running bridge, for tests/test_console_browser.py.
//
//   node console_browser.js --url http://127.0.0.1:PORT --token ADMIN --screenshot FILE
//       --split-route support --divergent-route support_divergent
//
// Talks to the test over stdio, one line each: it prints `STEP <what>` as it goes and
// `CALLS <route> <n>` when it needs calls placed; the test plays them and answers
// `PATHS <path>,<path>,...` on stdin. Prints `OK` at the end; any failure exits 1 with the reason
// on stderr.
//
// Its helpers (stdio protocol, checks, the Chromium launch) are exported for the other console
// scripts (console_plan_browser.js); `main` runs only when this file is the script.
"use strict";

const fs = require("fs");
const os = require("os");
const path = require("path");
const readline = require("readline");
const { chromium } = require("playwright-core");

const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const WAIT_MS = 15000;

function args(required = ["url", "token", "screenshot", "split-route", "divergent-route"]) {
  const out = {};
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i += 2) out[argv[i].replace(/^--/, "")] = argv[i + 1];
  for (const key of required) {
    if (!out[key]) throw new Error("missing --" + key);
  }
  return out;
}

const answers = [];
const waiting = [];
readline.createInterface({ input: process.stdin }).on("line", (line) => {
  const next = waiting.shift();
  if (next) next(line); else answers.push(line);
});
function answer() {
  return new Promise((resolve) => {
    const ready = answers.shift();
    if (ready !== undefined) resolve(ready); else waiting.push(resolve);
  });
}

function step(text) { process.stdout.write("STEP " + text + "\n"); }

function check(condition, message) {
  if (!condition) throw new Error(message);
}

async function placeCalls(route, count) {
  process.stdout.write("CALLS " + route + " " + count + "\n");
  const line = await answer();
  check(line.startsWith("PATHS "), "the test answered " + JSON.stringify(line));
  return line.slice(6).split(",").filter(Boolean);
}

async function number(page, selector) {
  return Number((await page.locator(selector).textContent()).trim());
}

async function waitFor(predicate, what) {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    if (await predicate()) return;
    if (Date.now() > deadline) throw new Error("timed out waiting for " + what);
    await new Promise((r) => setTimeout(r, 100));
  }
}

// Headless Chromium with a fresh profile and one page; `urls` collects every request, `problems`
// every page error and console error not matching `expectedErrors` (a RegExp, or null).
async function launch(expectedErrors) {
  check(fs.existsSync(CHROMIUM), "Chromium is missing at " + CHROMIUM + " (apt-get install chromium)");
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), "acvg-console-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1360, height: 900 },
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  const browser = { context, page: null, urls: [], problems: [] };
  browser.close = async () => {
    await context.close();
    fs.rmSync(profile, { recursive: true, force: true });
  };
  try {
    const page = context.pages()[0] || await context.newPage();
    browser.page = page;
    page.on("request", (request) => browser.urls.push(request.url()));
    page.on("pageerror", (error) => browser.problems.push("page error: " + error.message));
    page.on("console", (message) => {
      const expected = expectedErrors && expectedErrors.test(message.text());
      if (message.type() === "error" && !expected) {
        browser.problems.push("console error: " + message.text());
      }
    });
  } catch (error) {
    await browser.close();
    throw error;
  }
  return browser;
}

// The end of every run: the token never went into a URL, and the page logged no error.
function checkClean(browser, token) {
  const leaked = browser.urls.filter((u) => u.includes(token));
  check(!leaked.length, "the token appeared in a URL: " + leaked[0]);
  check(!browser.problems.length, browser.problems.join("; "));
}

async function main() {
  const opts = args();
  const base = opts.url.replace(/\/$/, "");
  const split = opts["split-route"];
  const divergent = opts["divergent-route"];
  // The refused token (401) and the refused percentage (400) are expected errors.
  const browser = await launch(/Failed to load resource: .* status of (400|401)\b/);
  try {
    const page = browser.page;

    step("the page loads and asks for the token; data needs it");
    await page.goto(base + "/console");
    await page.locator("#login").waitFor({ state: "visible" });
    check(await page.locator("#app").isHidden(), "the console shows before sign-in");
    const anonymous = await page.evaluate(async () => (await fetch("/console/api/state")).status);
    check(anonymous === 401, "GET /console/api/state without a token answered " + anonymous);

    step("a wrong token is refused");
    await page.fill("#token", "not-the-token");
    await page.click("#login-form button[type=submit]");
    await page.locator("#login-error").filter({ hasText: "invalid admin bearer token" }).waitFor();
    check(await page.evaluate(() => sessionStorage.length) === 0, "a refused token was stored");

    step("sign in");
    await page.fill("#token", opts.token);
    await page.click("#login-form button[type=submit]");
    await page.locator("#app").waitFor({ state: "visible" });
    check(await page.evaluate(() => Object.values(sessionStorage).length === 1),
      "the token is not in sessionStorage");
    await page.locator("#live").filter({ hasText: "live" }).waitFor();

    step("both routes and both paths show");
    const card = page.locator(`section.route[data-route="${split}"]`);
    await card.waitFor();
    await page.locator(`section.route[data-route="${divergent}"]`).waitFor();
    const callsOf = (p) => `section.route[data-route="${split}"] td[data-field=calls][data-path=${p}]`;
    check(await number(page, callsOf("legacy")) > 0, "no legacy calls shown on " + split);
    check(await number(page, callsOf("voicegateway")) > 0, "no voicegateway calls shown on " + split);
    check((await card.locator("[data-field=percent]").textContent()).trim() === "50 %",
      "the split route does not show 50 %");
    await card.locator("tr[data-node='(all nodes)'] td[data-field=verdict]").waitFor();
    check(await page.locator(`section.route[data-route="${split}"] svg.plot path.line.match`).count() === 1,
      "no match-rate line in the plot");

    step("the Voice KPIs of both paths side by side, with their difference");
    await checkKpis(page, split, divergent);

    step("a divergence from the divergent flow, with the differing field highlighted");
    await page.selectOption("#div-route", divergent);
    await page.locator("#div-node option[value=say]").waitFor({ state: "attached" });
    await page.selectOption("#div-node", "say");
    const item = page.locator(`article.divergence[data-route="${divergent}"][data-node=say]`).first();
    await item.waitFor();
    check(await page.locator(`article.divergence:not([data-route="${divergent}"])`).count() === 0,
      "the route filter shows other routes");
    for (const role of ["primary", "shadow"]) {
      const marked = await item.locator(`.side.${role} .leaf.diff`).evaluateAll(
        (nodes) => nodes.map((n) => n.getAttribute("data-path")));
      check(JSON.stringify(marked) === JSON.stringify(["text"]),
        role + " side highlights " + JSON.stringify(marked) + ", expected [\"text\"]");
    }
    check((await item.locator(".side.primary").getAttribute("data-path")) === "voicegateway",
      "the primary side is not voicegateway");
    check((await item.locator(".side.shadow").getAttribute("data-path")) === "legacy",
      "the shadow side is not legacy");
    const texts = await item.locator(".leaf.diff").allTextContents();
    check(texts.length === 2 && texts[0] !== texts[1], "the two sides show the same text: " + texts);

    step("an invalid percentage is refused with a clear message");
    await card.locator("input.percent-input").fill("150");
    await card.locator("button.apply-percent").click();
    await card.locator(".steer-msg.bad").filter({ hasText: "from 0 to 100" }).waitFor();

    for (const [percent, expected] of [[0, "legacy"], [100, "voicegateway"]]) {
      step(`set the percentage to ${percent}: the next calls go to ${expected}`);
      await card.locator("input.percent-input").fill(String(percent));
      await card.locator("button.apply-percent").click();
      await card.locator("[data-field=percent]").filter({ hasText: new RegExp(`^${percent} %$`) }).waitFor();
      const before = await number(page, callsOf(expected));
      const endedBefore = await number(page, kpiCell(split, "calls_ended", expected));
      const paths = await placeCalls(split, 6);
      check(paths.length === 6 && paths.every((p) => p === expected),
        `at ${percent} % the calls went to ${paths}`);
      await waitFor(async () => await number(page, callsOf(expected)) >= before + 6,
        `the page to count 6 more ${expected} calls live`);
      await waitFor(async () => await number(page, kpiCell(split, "calls_ended", expected)) >= endedBefore + 6,
        `the Voice KPIs to count 6 more ${expected} calls ended live`);
    }
    await page.locator(`#audit-rows tr[data-route="${split}"][data-setting=voicegateway_percent] td[data-field=change]`)
      .filter({ hasText: "0 → 100" }).waitFor();

    step("the kill switch sends new calls to legacy");
    await card.locator("button.force-legacy").click();
    await card.locator("[data-field=force]").filter({ hasText: "forced to legacy" }).waitFor();
    const legacyBefore = await number(page, callsOf("legacy"));
    const forced = await placeCalls(split, 6);
    check(forced.length === 6 && forced.every((p) => p === "legacy"),
      "with the kill switch on the calls went to " + forced);
    await waitFor(async () => await number(page, callsOf("legacy")) >= legacyBefore + 6,
      "the page to count 6 more legacy calls live");
    await page.locator(`#audit-rows tr[data-route="${split}"][data-setting=force] td[data-field=change]`)
      .filter({ hasText: "none → legacy" }).waitFor();

    step("clear the kill switch");
    await card.locator("button.force-clear").click();
    await card.locator("[data-field=force]").filter({ hasText: /^off$/ }).waitFor();
    const released = await placeCalls(split, 2);
    check(released.every((p) => p === "voicegateway"), "after clearing, calls went to " + released);

    step("screenshot");
    await page.selectOption("#div-node", "");
    await page.selectOption("#div-route", divergent);
    await page.waitForTimeout(300);
    fs.mkdirSync(path.dirname(opts.screenshot), { recursive: true });
    await page.screenshot({ path: opts.screenshot, fullPage: true });

    checkClean(browser, opts.token);
    process.stdout.write("OK\n");
  } finally {
    await browser.close();
  }
}

// ------------------------------------------------------------------ Voice KPIs

const KPI_PATHS = ["legacy", "voicegateway"];

function kpiCell(route, kpi, p) {
  return `section.route[data-route="${route}"] table.kpis tr[data-kpi="${kpi}"] ` +
    (p ? `td[data-path=${p}]` : "td[data-field=diff]");
}

async function text(page, selector) {
  return (await page.locator(selector).textContent()).trim();
}

// `split` served calls on both paths before the page opened; `divergent` on voicegateway only
// (its legacy runs as the shadow, which the KPIs do not count).
async function checkKpis(page, split, divergent) {
  const table = page.locator(`section.route[data-route="${split}"] table.kpis`);
  await table.waitFor();
  check((await table.locator("caption").textContent()).startsWith("Voice KPIs"),
    "the KPI table has no caption");
  const columns = await table.locator("thead th[scope=col]").allTextContents();
  check(JSON.stringify(columns) === JSON.stringify(["KPI", "legacy", "voicegateway", "difference"]),
    "the KPI table's columns are " + JSON.stringify(columns));
  const rows = await table.locator("tbody tr").count();
  check(rows >= 11 && await table.locator("tbody tr > th[scope=row]").count() === rows,
    "each KPI row needs a row header");
  await waitFor(async () => {
    for (const p of KPI_PATHS) {
      if (!(await number(page, kpiCell(split, "calls_ended", p)) > 0)) return false;
    }
    return true;
  }, "calls ended on both paths of " + split);
  const formats = {
    first_prompt_p50: /^\d+\.\d\d s$/, first_prompt_p95: /^\d+\.\d\d s$/,
    turns_per_call: /^\d+\.\d$/, no_input_per_call: /^\d+\.\d\d$/, duration_mean_s: /^\d+\.\d s$/,
  };
  for (const p of KPI_PATHS) {
    for (const [kpi, format] of Object.entries(formats)) {
      const shown = await text(page, kpiCell(split, kpi, p));
      check(format.test(shown), `${split} ${p} ${kpi} shows ${JSON.stringify(shown)}`);
    }
    const ended = await number(page, kpiCell(split, "calls_ended", p));
    const shares = await table.locator(`tr[data-kpi^="outcome-"] td[data-path=${p}]`).allTextContents();
    check(shares.every((s) => /^\d+\.\d % \(\d+\)$/.test(s.trim())),
      `${p} outcome shares read ${JSON.stringify(shares)}`);
    const counted = shares.reduce((sum, s) => sum + Number(s.match(/\((\d+)\)/)[1]), 0);
    check(counted === ended, `${p}: the outcomes count ${counted} of ${ended} calls ended`);
  }
  const diff = await text(page, kpiCell(split, "first_prompt_p50"));
  check(/^(±0\.00 s|▲ \+\d+\.\d\d s \(worse\)|▼ −\d+\.\d\d s \(better\))$/.test(diff),
    "the median wait's difference reads " + JSON.stringify(diff));
  for (const cell of await table.locator("td[data-level=worse]").all()) {
    const shown = await cell.textContent();
    check(/^[▲▼] .* \(worse\)$/.test(shown), "a worse difference reads " + JSON.stringify(shown));
  }
  // the route that served no legacy call: its legacy column is empty, so is the difference
  check(await number(page, kpiCell(divergent, "calls_ended", "legacy")) === 0,
    divergent + " counts legacy calls ended");
  check(await number(page, kpiCell(divergent, "calls_ended", "voicegateway")) > 0,
    divergent + " counts no voicegateway calls ended");
  for (const kpi of ["first_prompt_p50", "turns_per_call", "outcome-caller_hangup"]) {
    const shown = await text(page, kpiCell(divergent, kpi, "legacy"));
    check(shown === "–", `${divergent} legacy ${kpi} shows ${JSON.stringify(shown)}, not "–"`);
    check(await text(page, kpiCell(divergent, kpi)) === "–", `${divergent} ${kpi} has a difference`);
  }
  check(/^\d+\.\d\d s$/.test(await text(page, kpiCell(divergent, "first_prompt_p50", "voicegateway"))),
    divergent + " shows no voicegateway wait for the first prompt");
  // the difference's words, on figures of our own: worse flagged in text as well as in colour
  const rendered = await page.evaluate(() => {
    const card = { kpiRows: document.createElement("tbody") };
    const kpis = (error, wait) => ({
      calls_ended: 1000, turns_per_call: 3, no_input_per_call: 0.2, duration_mean_s: 40,
      outcomes: { error: { count: Math.round(error * 1000), share: error },
        bot_hangup: { count: 500, share: 0.5 } },
      first_prompt: { calls: 1000, p50_s: wait, p95_s: null },
    });
    renderKpis(card, { legacy: kpis(0.1, 0.5), voicegateway: kpis(0.131, 0.38) });
    const diff = (kpi) => {
      const cell = card.kpiRows.querySelector(`tr[data-kpi="${kpi}"] td[data-field=diff]`);
      return [cell.textContent, cell.getAttribute("data-level")];
    };
    return [diff("outcome-error"), diff("first_prompt_p50"), diff("first_prompt_p95"),
      diff("calls_ended"), diff("outcome-bot_hangup"), diff("outcome-early_hangup")];
  });
  const expected = [["▲ +3.1 pts (worse)", "worse"], ["▼ −0.12 s (better)", "better"],
    ["–", "none"], ["±0", "same"], ["±0.0 pts", "same"], ["–", "none"]];
  check(JSON.stringify(rendered) === JSON.stringify(expected),
    "the differences read " + JSON.stringify(rendered));
}

// Runs `main` as the script: exit 0 after it, 1 with the reason on stderr.
function run(name, main) {
  main().then(() => process.exit(0), (error) => {
    process.stderr.write(name + ": " + (error && error.stack || error) + "\n");
    process.exit(1);
  });
}

module.exports = { WAIT_MS, args, step, check, placeCalls, number, waitFor, launch, checkClean, run };

if (require.main === module) run("console_browser.js", main);
