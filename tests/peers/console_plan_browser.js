// Drives the migration console's plan panel in Debian's Chromium (headless, via playwright-core)
// against a running bridge, for tests/test_console_plan_browser.py. The helpers and the stdio
// protocol are console_browser.js's.
//
//   node console_plan_browser.js --url http://127.0.0.1:PORT --token ADMIN --screenshot FILE
//       --manual-route R1 --broken-route R2 --dry-route R3
//
// R1 awaits approval on its first step (5 %, next 50 %) with a passing fallback_rate gate; R2
// was rolled back (forced to legacy) by its failed critical fallback_rate gate; R3 is a dry run
// on its first imagined step (10 %) with nothing judged yet. Prints `STEP <what>` as it goes and
// `OK` at the end; any failure exits 1 with the reason on stderr.
"use strict";

const fs = require("fs");
const path = require("path");
const { args, step, check, waitFor, launch, checkClean, run } = require("./console_browser");

async function text(locator) { return ((await locator.textContent()) || "").trim(); }

async function main() {
  const opts = args(["url", "token", "screenshot", "manual-route", "broken-route", "dry-route"]);
  const base = opts.url.replace(/\/$/, "");
  const browser = await launch(null);
  try {
    const page = browser.page;

    step("sign in");
    await page.goto(base + "/console");
    await page.fill("#token", opts.token);
    await page.click("#login-form button[type=submit]");
    await page.locator("#app").waitFor({ state: "visible" });
    await page.locator("#live").filter({ hasText: "live" }).waitFor();
    await page.locator("#plans").waitFor({ state: "visible" });
    check(await page.locator("#plans article.plan").count() === 3, "not one block per planned route");

    const manual = page.locator(`article.plan[data-route="${opts["manual-route"]}"]`);
    step("the manual plan awaits approval on its first step, its gate passed");
    await manual.locator("[data-field=state]").filter({ hasText: /^awaiting approval$/ }).waitFor();
    const current = manual.locator("ol.plan-steps li.current");
    check(await current.count() === 1, "not exactly one current step");
    check(await current.getAttribute("data-step") === "5" && await current.getAttribute("aria-current") === "step",
      "the current step is not 5 % (aria-current=step)");
    check(await manual.locator("ol.plan-steps li.pending").getAttribute("data-step") === "50",
      "the step awaiting approval is not marked");
    const steps = await manual.locator("ol.plan-steps li").allTextContents();
    check(JSON.stringify(steps) === JSON.stringify(["5 %", "50 %", "100 %"]), "steps shown: " + steps);
    check(await text(manual.locator("[data-field=step]")) === "5 % (step 1 of 3)", "step line");
    check(/^promote to 50 % needs approval$/.test(await text(manual.locator("[data-field=reason]"))),
      "the reason is not the pending promotion");
    check(/^[1-9]\d* of 1 needed$/.test(await text(manual.locator("[data-field=calls]"))),
      "voicegateway calls vs min_calls: " + await text(manual.locator("[data-field=calls]")));
    check(await text(manual.locator("[data-field=next-evaluation]")) === "waits for a person to approve",
      "next evaluation while awaiting approval");
    const gate = manual.locator("table.plan-gates tr[data-gate=fallback_rate]");
    check(await text(gate.locator("[data-field=status]")) === "pass", "fallback_rate is not shown passed");
    check(await gate.locator("td.gate.pass").count() === 1, "the pass status is not coloured as one");
    check(await text(gate.locator("[data-field=figure]")) === "0", "fallback_rate figure");
    check(await text(gate.locator("[data-field=threshold]")) === "≤ 1", "fallback_rate threshold");
    check(await text(gate.locator("[data-field=critical]")) === "no, weight 1", "fallback_rate critical");
    check(await manual.locator("table.plan-gates tbody tr").count() === 1, "gates other than the plan's");
    check(await text(manual.locator("[data-field=decision]").first()) === "promote", "last verdict");
    const promoted = manual.locator("table.plan-history tr[data-decision=promote]");
    check(await text(promoted.locator("[data-field=change]")) === "5 % → 50 %", "history promote row");
    check(await manual.locator("button.plan-approve").isVisible(), "no Approve button while awaiting approval");
    check(await manual.locator("button.plan-resume").isHidden(), "a Resume button on a plan not rolled back");
    check(await text(manual.locator("button.plan-approve")) === "Approve: promote to 50 %", "Approve label");
    const manualCard = page.locator(`section.route[data-route="${opts["manual-route"]}"]`);
    check(await text(manualCard.locator("[data-field=plan]")) === "plan: awaiting approval",
      "the route card does not say the plan awaits approval");

    const broken = page.locator(`article.plan[data-route="${opts["broken-route"]}"]`);
    step("the broken plan was rolled back by its failed critical gate; no Approve there");
    await broken.locator("[data-field=state]").filter({ hasText: /^rolled back$/ }).waitFor();
    const failed = broken.locator("table.plan-gates tr[data-gate=fallback_rate]");
    check(await text(failed.locator("[data-field=status]")) === "fail", "fallback_rate is not shown failed");
    check(await failed.locator("td.gate.fail").count() === 1, "the fail status is not coloured as one");
    check(await text(failed.locator("[data-field=critical]")) === "yes", "fallback_rate not critical");
    check(await text(failed.locator("[data-field=figure]")) === "1", "fallback_rate figure on the broken route");
    check(await text(failed.locator("[data-field=threshold]")) === "≤ 0", "threshold on the broken route");
    const rolled = broken.locator("table.plan-history tr[data-decision=rollback]");
    check(await text(rolled.locator("[data-field=failed]")) === "fallback_rate", "failed gates in history");
    check(await text(rolled.locator("[data-field=change]")) === "5 % → 0 %", "rollback row from → to");
    check(await broken.locator("button.plan-approve").isHidden(), "an Approve button on a rolled-back plan");
    check(await broken.locator("button.plan-resume").isVisible(), "no Resume button on a rolled-back plan");
    check(await text(broken.locator("[data-field=percent]")) === "5 %, forced to legacy", "the plan's force");

    const dry = page.locator(`article.plan[data-route="${opts["dry-route"]}"]`);
    step("the dry run is marked as one, on a step it only imagines");
    check(await dry.evaluate((n) => n.classList.contains("dry-run")), "the dry-run block is not marked");
    check(await text(dry.locator("[data-field=dry-run-badge]")) === "dry run", "no dry run badge");
    check(await dry.locator("p[data-field=dry-run]").isVisible(), "no dry-run note");
    check((await text(dry.locator("p[data-field=dry-run]"))).includes("voicegateway_percent stays 0 %"),
      "the dry-run note does not say the percentage stays");
    check(await text(dry.locator("[data-field=step]")) === "10 % (step 1 of 2), imagined", "dry-run step");
    check(await manual.locator("[data-field=dry-run-badge]").count() === 0, "a real plan marked dry run");
    const rehearsed = dry.locator("table.plan-history tr[data-decision=promote]");
    check(await rehearsed.locator("[data-field=dry-run] .badge.dry").count() === 1,
      "the dry-run decision is not marked in the history");
    check(await dry.locator("table.plan-gates tr[data-gate]").count() > 1, "the default gates are not listed");
    check(await text(dry.locator("table.plan-gates tr[data-gate] [data-field=status]").first()) === "not judged",
      "gates before any verdict are not shown as not judged");
    check(await dry.locator("button.plan-approve").isHidden() && await dry.locator("button.plan-resume").isHidden(),
      "action buttons on a running plan");

    step("screenshot");
    fs.mkdirSync(path.dirname(opts.screenshot), { recursive: true });
    await page.locator("#plans").screenshot({ path: opts.screenshot });

    step("Approve promotes the manual plan to its next step");
    await manual.locator("button.plan-approve").click();
    await manual.locator(".plan-msg.ok").filter({ hasText: "approved: now on 50 %" }).waitFor();
    await manual.locator("[data-field=state]").filter({ hasText: /^running$/ }).waitFor();
    check(await manual.locator("ol.plan-steps li.current").getAttribute("data-step") === "50",
      "the current step did not move to 50 %");
    check(await manual.locator("ol.plan-steps li.done").count() === 1, "the first step is not marked done");
    check(await manual.locator("ol.plan-steps li.pending").count() === 0, "a step still awaits approval");
    check(await manual.locator("button.plan-approve").isHidden(), "Approve still shown after approving");
    const approved = manual.locator("table.plan-history tbody tr").first();
    check(await approved.getAttribute("data-decision") === "approved", "the newest decision is not the approval");
    check(await text(approved.locator("[data-field=change]")) === "5 % → 50 %", "approval row from → to");
    await manualCard.locator("[data-field=percent]").filter({ hasText: /^50 %$/ }).waitFor();
    const auditRow = `#audit-rows tr[data-route="${opts["manual-route"]}"][data-setting=voicegateway_percent]`;
    await page.locator(auditRow + " td[data-field=change]").filter({ hasText: "5 → 50" }).waitFor();

    step("Resume lets the rolled-back plan go on and lifts its force");
    await broken.locator("button.plan-resume").click();
    await broken.locator(".plan-msg.ok").filter({ hasText: "resumed on 5 %" }).waitFor();
    await broken.locator("[data-field=state]").filter({ hasText: /^running$/ }).waitFor();
    check(await broken.locator("button.plan-resume").isHidden(), "Resume still shown after resuming");
    const brokenCard = page.locator(`section.route[data-route="${opts["broken-route"]}"]`);
    await brokenCard.locator("[data-field=force]").filter({ hasText: /^off$/ }).waitFor();
    await waitFor(async () => /^0 of 1 needed$/.test(await text(broken.locator("[data-field=calls]"))),
      "a fresh window on the resumed step");

    checkClean(browser, opts.token);
    process.stdout.write("OK\n");
  } finally {
    await browser.close();
  }
}

run("console_plan_browser.js", main);
