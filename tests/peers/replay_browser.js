// Opens a written replay report (report.html, from a file:// URL) in Debian's Chromium (headless,
// via playwright-core; no browser download), for tests/test_replay_browser.py.
//
//   node replay_browser.js --file DIR/report.html --screenshot FILE --match-rate "96.2 %"
//       --nodes say,play,transfer_dial --node say --field text
//
// Prints `STEP <what>` as it goes and `OK` at the end; any failure exits 1 with the reason on
// stderr.
"use strict";

const fs = require("fs");
const os = require("os");
const path = require("path");
const { pathToFileURL } = require("url");
const { chromium } = require("playwright-core");

const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const TRANSPARENT = "rgba(0, 0, 0, 0)";

function args() {
  const out = {};
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i += 2) out[argv[i].replace(/^--/, "")] = argv[i + 1];
  for (const key of ["file", "screenshot", "match-rate", "nodes", "node", "field"]) {
    if (!out[key]) throw new Error("missing --" + key);
  }
  return out;
}

function step(text) { process.stdout.write("STEP " + text + "\n"); }

function check(condition, message) {
  if (!condition) throw new Error(message);
}

// The colour a reader sees behind an element: its own background, or the first ancestor's that
// is not transparent.
function seenBackground(element) {
  for (let node = element; node; node = node.parentElement) {
    const colour = getComputedStyle(node).backgroundColor;
    if (colour && colour !== "rgba(0, 0, 0, 0)" && colour !== "transparent") return colour;
  }
  return "rgb(255, 255, 255)";
}

async function launch(profile, javaScriptEnabled) {
  return chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    javaScriptEnabled,
    viewport: { width: 1360, height: 900 },
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
}

async function withPage(javaScriptEnabled, url, body) {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), "acvg-replay-chromium-"));
  const context = await launch(profile, javaScriptEnabled);
  try {
    const page = context.pages()[0] || await context.newPage();
    const requests = [];
    const problems = [];
    page.on("request", (request) => requests.push(request.url()));
    page.on("pageerror", (error) => problems.push("page error: " + error.message));
    page.on("console", (message) => {
      if (message.type() === "error") problems.push("console error: " + message.text());
    });
    await page.goto(url);
    await page.waitForLoadState("load");
    await body(page);
    const outside = requests.filter((u) => u !== url);
    check(!outside.length, "the page loaded something: " + outside.join(", "));
    check(!problems.length, problems.join("; "));
  } finally {
    await context.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
}

async function checkReport(page, opts) {
  step("the match rate is shown");
  const rate = page.locator("#summary #match-rate");
  check(await rate.isVisible(), "the match rate is not visible");
  const shown = (await rate.textContent()).trim();
  check(shown === opts["match-rate"], "the match rate shows " + JSON.stringify(shown));

  step("the node table has a row per node");
  const nodes = await page.locator("table#nodes tr[data-node]").evaluateAll(
    (rows) => rows.map((r) => r.getAttribute("data-node")));
  check(JSON.stringify(nodes) === JSON.stringify(opts.nodes.split(",")),
    "the node table rows are " + JSON.stringify(nodes));
  check(await page.locator("table#nodes").isVisible(), "the node table is not visible");

  step(`the divergence on ${opts.node} highlights ${opts.field}`);
  const item = page.locator(`#divergences .divergence[data-node="${opts.node}"]`).first();
  check(await item.isVisible(), "no visible divergence for node " + opts.node);
  const marked = await item.locator("mark.diff").evaluateAll(
    (marks) => marks.map((m) => m.getAttribute("data-field")));
  check(JSON.stringify(marked) === JSON.stringify([opts.field, opts.field]),
    "the divergence marks " + JSON.stringify(marked));
  const marks = item.locator(`mark.diff[data-field="${opts.field}"]`);
  const plainCell = item.locator("tbody tr:not(.diff) td").nth(1);
  check(await plainCell.count() === 1, "the divergence has no unhighlighted row to compare with");
  const plain = await plainCell.evaluate(seenBackground);
  for (let i = 0; i < 2; i++) {
    const mark = marks.nth(i);
    check(await mark.isVisible(), "highlight " + i + " is not visible");
    const box = await mark.boundingBox();
    check(box && box.width > 0 && box.height > 0, "highlight " + i + " has no size");
    const own = await mark.evaluate((m) => getComputedStyle(m).backgroundColor);
    check(own !== TRANSPARENT && own !== "transparent", "highlight " + i + " is transparent");
    check(own !== plain, `highlight ${i} (${own}) looks like an unhighlighted row (${plain})`);
  }
  const values = await marks.allTextContents();
  check(values[0] !== values[1], "both sides show the same value: " + values[0]);
}

async function main() {
  const opts = args();
  check(fs.existsSync(CHROMIUM), "Chromium is missing at " + CHROMIUM + " (apt-get install chromium)");
  const url = pathToFileURL(path.resolve(opts.file)).href;

  await withPage(true, url, async (page) => {
    await checkReport(page, opts);

    step("the node filter works");
    // The inline script runs before `load`; a hash the page's policy does not allow stops it.
    check(await page.locator("#div-filter").isVisible(), "the page's script did not run");
    await page.selectOption("#div-node", opts.node);
    const others = page.locator(`#divergences .divergence:not([data-node="${opts.node}"])`);
    for (let i = 0; i < await others.count(); i++) {
      check(await others.nth(i).isHidden(), "the filter left another node's divergence visible");
    }
    check(await page.locator(`#divergences .divergence[data-node="${opts.node}"]`).first().isVisible(),
      "the filter hid the node it selects");
    await page.selectOption("#div-node", "");

    step("screenshot");
    fs.mkdirSync(path.dirname(opts.screenshot), { recursive: true });
    await page.screenshot({ path: opts.screenshot, fullPage: true });
  });

  await withPage(false, url, async (page) => {
    step("without JavaScript the report reads the same");
    await checkReport(page, opts);
    check(await page.locator("#div-filter").isHidden(), "the filter shows without JavaScript");
  });
  process.stdout.write("OK\n");
}

main().then(() => process.exit(0), (error) => {
  process.stderr.write("replay_browser.js: " + (error && error.stack || error) + "\n");
  process.exit(1);
});
