// The operator console in a real browser, as an operator would use it.
//
//   node tests/browser/console.mjs <base url> <message id>
//
// Opens <base url>/console in headless Chromium, waits for the turn with
// <message id> to appear in the live list, clicks it, checks that its
// waterfall shows the expected spans and that the latency table has rows,
// and saves a screenshot. Exits 0 when all of that held, 1 with the reason
// otherwise.
//
// Environment (all optional):
//   CONSOLE_URL, CONSOLE_MESSAGE_ID   instead of the arguments
//   CONSOLE_TOKEN                     the operator token, passed as ?token=
//   CONSOLE_EXPECT_STAGES             spans the waterfall must show (default "stt,send")
//   CONSOLE_SCREENSHOT                where the page's PNG goes (default target/console.png);
//                                     the selected turn's panel goes beside it, as *-turn.png
//   CONSOLE_TIMEOUT_MS                how long to wait for the turn (default 20000)
//   CHROMIUM                          the browser (default /usr/bin/chromium)

import { existsSync, mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';

const base = (process.argv[2] || process.env.CONSOLE_URL || '').replace(/\/+$/, '');
const messageId = process.argv[3] || process.env.CONSOLE_MESSAGE_ID || '';
const token = process.env.CONSOLE_TOKEN || '';
const expectStages = (process.env.CONSOLE_EXPECT_STAGES ?? 'stt,send')
  .split(',').map((s) => s.trim()).filter(Boolean);
const screenshot = resolve(process.env.CONSOLE_SCREENSHOT || 'target/console.png');
const timeout = Number(process.env.CONSOLE_TIMEOUT_MS) || 20000;
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';

function fail(message) {
  console.error(`console browser test: FAILED: ${message}`);
  process.exit(1);
}

if (!base || !messageId) {
  fail('usage: node tests/browser/console.mjs <base url> <message id> (or CONSOLE_URL and CONSOLE_MESSAGE_ID)');
}
if (!existsSync(executablePath)) {
  fail(`no browser at ${executablePath}: install Debian's chromium (./x setup does), or set CHROMIUM`);
}

let chromium;
try {
  ({ chromium } = await import('playwright-core'));
} catch (e) {
  fail(`cannot load playwright-core (${e.message}): run ./x setup, which runs npm ci`);
}

// An attribute selector value in double quotes, with CSS escapes.
const quoted = (s) => `"${s.replace(/["\\]/g, '\\$&').replace(/\n/g, '\\a ')}"`;

// Nothing may hang the caller: a hard stop well past the waits below.
const watchdog = setTimeout(() => fail(`gave up after ${timeout + 30000} ms`), timeout + 30000);

// The machine's network is closed: no background traffic from the browser.
const args = [
  '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];
const browser = await chromium.launch({ executablePath, args }).catch((e) => {
  fail(`cannot start ${executablePath}: ${e.message}`);
});
const problems = [];
let step = 'opening the page';
try {
  const page = await browser.newPage({ viewport: { width: 1440, height: 1000 } });
  page.on('pageerror', (e) => problems.push(`script error: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push(`console error: ${m.text()}`);
  });

  const url = `${base}/console${token ? `?token=${encodeURIComponent(token)}` : ''}`;
  const res = await page.goto(url, { waitUntil: 'load', timeout });
  if (!res || !res.ok()) {
    throw new Error(`GET /console answered ${res ? res.status() : 'nothing'}: ${res ? (await res.text()).trim() : ''}`);
  }

  step = `waiting for turn ${messageId} in #turns`;
  const row = page.locator(`#turns tbody tr[data-message-id=${quoted(messageId)}]`);
  try {
    await row.waitFor({ state: 'visible', timeout });
  } catch {
    const alert = (await page.locator('#alert').textContent()) || '';
    const shown = await page.locator('#turns tbody tr').evaluateAll((rows) => rows.map((r) => r.dataset.messageId));
    throw new Error(`the turn did not appear within ${timeout} ms; rows shown: [${shown.join(', ')}]${alert.trim() ? `; page says: ${alert.trim()}` : ''}`);
  }

  step = 'clicking the turn';
  await row.click();
  await page.waitForFunction(
    (id) => document.querySelector('#turns tr.selected')?.dataset.messageId === id
      && document.getElementById('waterfall')?.dataset.messageId === id,
    messageId,
    { timeout: 5000 },
  );

  step = 'reading the waterfall';
  const waterfall = page.locator('#waterfall');
  const stages = await waterfall.locator('[data-stage]').evaluateAll((gs) => gs.map((g) => g.dataset.stage));
  const missing = expectStages.filter((s) => !stages.includes(s));
  if (missing.length) {
    throw new Error(`the waterfall of ${messageId} lacks ${missing.join(', ')}; it shows [${stages.join(', ')}]`);
  }
  for (const s of expectStages) {
    const bars = await waterfall.locator(`[data-stage=${quoted(s)}] rect.bar`).count();
    if (bars === 0) throw new Error(`the ${s} row of the waterfall has no bar`);
  }
  const turnMs = (await page.locator('[data-testid="turn-ms"]').textContent()) || '';
  const seqMs = (await page.locator('[data-testid="sequential-ms"]').textContent()) || '';
  if (!/\d/.test(turnMs) || !/\d/.test(seqMs)) {
    throw new Error(`the turn and sequential figures are missing (turn "${turnMs}", sequential "${seqMs}")`);
  }

  step = 'reading the latency table';
  await page.locator('#stats tbody tr[data-stage]').first().waitFor({ timeout: 5000 }).catch(() => {
    throw new Error('the latency table (#stats) has no stage rows');
  });
  const statRows = await page.locator('#stats tbody tr[data-stage]').count();
  const budgetRows = await page.locator('#budgets tbody tr').count();
  if (budgetRows === 0) throw new Error('the budgets table (#budgets) is empty');

  const expectOutbox = process.env.CONSOLE_EXPECT_OUTBOX;
  if (expectOutbox) {
    step = 'reading the outbox';
    await page.locator(`#outbox tbody tr[data-message="${expectOutbox}"]`).waitFor({ timeout: 5000 }).catch(() => {
      throw new Error(`the outbox table has no row for ${expectOutbox}`);
    });
    const paused = page.locator('[data-testid="paused"]');
    if (!(await paused.isVisible())) throw new Error('the paused-sending banner is not shown');
    const text = (await paused.textContent()) || '';
    if (!text.includes('access token')) throw new Error(`the banner does not say why: "${text}"`);
  }

  const teach = process.env.CONSOLE_TEACH;
  if (teach) {
    step = `teaching the turn's intent (${teach})`;
    const box = page.locator('[data-testid="label-box"]');
    await box.waitFor({ state: 'visible', timeout: 5000 }).catch(() => {
      throw new Error('the label control is not shown for the selected turn');
    });
    await page.locator('[data-testid="label-intent"]').selectOption(teach);
    await page.locator('[data-testid="label-save"]').click();
    const status = page.locator('[data-testid="label-status"]');
    await page.waitForFunction(
      () => /learned|not saved/.test(document.querySelector('[data-testid="label-status"]')?.textContent || ''),
      null,
      { timeout: 5000 },
    ).catch(() => {});
    const said = ((await status.textContent()) || '').trim();
    if (!said.startsWith('learned') || !said.includes(teach)) {
      throw new Error(`teaching ${teach} was not confirmed; the page says "${said}"`);
    }
  }

  step = 'taking the screenshot';
  mkdirSync(dirname(screenshot), { recursive: true });
  await page.screenshot({ path: screenshot, fullPage: true });
  // The selected turn's panel alone, at full size.
  const turnShot = screenshot.replace(/(\.png)?$/, '-turn.png');
  await page.locator('#turn-panel').screenshot({ path: turnShot });

  if (problems.length) throw new Error(problems.join('; '));
  console.log(`console browser test: ok: turn ${messageId} shows [${stages.join(', ')}]; `
    + `${statRows} latency rows; ${budgetRows} budgets; ${turnMs.trim()}, ${seqMs.trim()}; screenshots ${screenshot}, ${turnShot}`);
} catch (e) {
  const extra = problems.length ? ` (also: ${problems.join('; ')})` : '';
  await browser.close().catch(() => {});
  fail(`${step}: ${e.message}${extra}`);
}
await browser.close();
clearTimeout(watchdog);
