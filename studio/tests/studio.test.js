// Browser tests of the Studio console in real headless Chromium (Debian's package) through
// playwright-core. Started by ops/studio-test.sh, which serves a fresh ledger with recorded
// runs and passes their ids and the server's token in STUDIO_* variables.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { chromium } from 'playwright-core';

const base = process.env.STUDIO_BASE;
const token = process.env.STUDIO_TOKEN;
const out = process.env.STUDIO_OUT || 'output';
const runs = { slow: process.env.STUDIO_SLOW_RUN, flaky: process.env.STUDIO_FLAKY_RUN, big: process.env.STUDIO_BIG_RUN };
assert.ok(base && token, 'run through ops/studio-test.sh');
mkdirSync(out, { recursive: true });

let browser;
let page;
const errors = [];

async function apiGet(path) {
  const r = await fetch(base + path, { headers: { authorization: `Bearer ${token}` } });
  assert.equal(r.status, 200, `${path}: ${r.status}`);
  return r.json();
}

async function until(what, fn, ms = 15000) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 150));
  }
}

const shot = (name) => page.screenshot({ path: `${out}/${name}.png`, fullPage: false });

async function confirmDialog() {
  const dialog = page.locator('dialog#confirm');
  await dialog.waitFor({ state: 'visible' });
  await page.locator('#confirm-ok').click();
  await dialog.waitFor({ state: 'hidden' });
}

before(async () => {
  browser = await chromium.launch({ executablePath: process.env.CHROMIUM || '/usr/bin/chromium', args: ['--no-sandbox'] });
  const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  page = await context.newPage();
  page.on('pageerror', (e) => errors.push(e.message));
  page.setDefaultTimeout(15000);
});

after(async () => {
  await browser?.close();
});

test('a read without the token is 401, and the console asks for it once', async () => {
  const r = await fetch(`${base}/v1/runs`);
  assert.equal(r.status, 401);
  await page.goto(`${base}/runs`);
  await page.locator('#token').fill('not the token');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByText('That is not the server’s token.').waitFor();
  await shot('sign-in');
  await page.locator('#token').fill(token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.locator('table.runs tbody tr[data-run-id]').first().waitFor();
  const cookies = await page.context().cookies();
  const session = cookies.find((c) => c.name === 'runledger_session');
  assert.ok(session && session.httpOnly && session.sameSite === 'Strict', JSON.stringify(cookies));
  assert.ok(!session.value.includes(token));
  assert.ok(!page.url().includes(token));
});

test('the runs list shows the recorded runs, and a new run appears live', async () => {
  const rows = page.locator('table.runs tbody tr[data-run-id]');
  await until('7 runs', async () => (await rows.count()) >= 7);
  for (const name of ['fallback-route', 'fan-in', 'review-loop', 'project-tools']) {
    assert.ok(await page.locator('table.runs tbody').getByText(name, { exact: true }).count() >= 1, name);
  }
  await shot('runs');
  const r = await fetch(`${base}/v1/runs`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ definition: 'name: live-one\nnodes:\n  - { id: start, type: start }\n  - { id: done, type: end }\nconnectors:\n  - { id: c1, from: start, to: done }\n' }),
  });
  assert.equal(r.status, 201);
  const { run_id: id } = await r.json();
  await page.locator(`tr[data-run-id="${id}"]`).waitFor({ timeout: 30000 });
  await page.locator(`tr[data-run-id="${id}"] .badge`, { hasText: 'completed' }).waitFor();
});

test('filters and search narrow the list; the back button restores them', async () => {
  await page.locator('#f-status').selectOption('completed');
  await page.locator('#f-q').fill('FALLBACK');
  await page.getByRole('button', { name: 'Apply' }).click();
  await page.waitForURL(/status=completed/);
  assert.match(page.url(), /q=FALLBACK/);
  const rows = page.locator('table.runs tbody tr[data-run-id]');
  await until('one fallback-route run', async () => (await rows.count()) === 1);
  assert.equal(await rows.first().locator('td').nth(2).innerText(), 'fallback-route');
  // Keyboard: Enter on a focused row opens the run.
  await rows.first().focus();
  await page.keyboard.press('Enter');
  await page.waitForURL(/\/runs\/[0-9a-f-]{36}/);
  await page.locator('svg.graph').waitFor();
  await page.goBack();
  await page.waitForURL(/status=completed/);
  await until('one row again', async () => (await rows.count()) === 1);
  assert.equal(await page.locator('#f-status').inputValue(), 'completed');
  assert.equal(await page.locator('#f-q').inputValue(), 'FALLBACK');
});

test('the run graph shows every node with its status; the inspector shows routing evaluations', async () => {
  await page.locator('table.runs tbody tr[data-run-id]').first().click();
  await page.locator('svg.graph').waitFor();
  const nodes = page.locator('svg.graph g.node');
  assert.equal(await nodes.count(), 7);
  await until('statuses', async () => (await page.locator('g.node[data-node="triage"]').getAttribute('data-status')) === 'succeeded');
  assert.equal(await page.locator('g.node[data-node="fix_bug"]').getAttribute('data-status'), 'none');
  assert.equal(await page.locator('.fallback-badge').count(), 1);
  assert.ok((await page.locator('g.node[data-node="route"] .extra').textContent()).includes('Routed: 1'));
  await page.locator('g.node[data-node="route"]').click();
  const inspector = page.locator('#inspector');
  await inspector.getByText('Routing decision').waitFor();
  const evaluations = inspector.locator('table.evaluations tbody tr');
  assert.equal(await evaluations.count(), 2);
  await evaluations.first().locator('td', { hasText: 'to_bugs' }).waitFor();
  await inspector.locator('table.evaluations td', { hasText: 'is false' }).first().waitFor();
  await inspector.getByText('routed through the fallback connector to_triage').waitFor();
  await page.locator('g.node[data-node="classify"]').click();
  await inspector.locator('pre.json', { hasText: '"category": "question"' }).waitFor();
  await page.locator('table.timeline tbody tr').first().waitFor();
  await shot('run');
});

test('pause and resume from the console change the run in the ledger', async () => {
  await page.goto(`${base}/runs/${runs.slow}`);
  await page.locator('button[data-action="pause"]:not([disabled])').click();
  await confirmDialog();
  await page.locator('#flash', { hasText: 'Run paused' }).waitFor();
  await until('paused in the ledger', async () => (await apiGet(`/v1/runs/${runs.slow}`)).run.status === 'paused');
  const ledger = await apiGet(`/v1/runs/${runs.slow}/events?limit=1000`);
  assert.ok(ledger.items.some((e) => e.event_type === 'RunPaused'));
  await page.locator('button[data-action="resume"]:not([disabled])').click();
  await confirmDialog();
  await page.locator('#flash', { hasText: 'Run resumed' }).waitFor();
  await until('running again', async () => (await apiGet(`/v1/runs/${runs.slow}`)).run.status === 'running');
  await shot('run-controls');
});

test('node retry on a failed run completes it; the skip editor refuses bad JSON', async () => {
  await until('the flaky run failed', async () => (await apiGet(`/v1/runs/${runs.flaky}`)).run.status === 'failed');
  await page.goto(`${base}/runs/${runs.flaky}`);
  await page.locator('g.node[data-node="work"][data-status="failed"]').click();
  const output = page.locator('#skip-output');
  await output.fill('{ not json');
  assert.equal(await page.locator('button[data-action="skip"]').isDisabled(), true);
  assert.equal(await output.getAttribute('aria-invalid'), 'true');
  await output.fill('{"text": "skipped"}');
  assert.equal(await page.locator('button[data-action="skip"]').isDisabled(), false);
  await page.locator('button[data-action="retry"]').click();
  await confirmDialog();
  await page.locator('#flash', { hasText: 'Node work retried' }).waitFor();
  await until('completed', async () => (await apiGet(`/v1/runs/${runs.flaky}`)).run.status === 'completed');
  await page.locator('g.node[data-node="work"][data-status="succeeded"]').waitFor();
  await page.locator('h1 .badge', { hasText: 'completed' }).waitFor();
});

test('fork from a node of a finished run opens the new run, linked both ways', async () => {
  const source = runs.flaky;
  await page.goto(`${base}/runs/${source}`);
  await page.locator('h1 .badge', { hasText: 'completed' }).waitFor();
  await page.locator('g.node[data-node="work"]').click();
  await page.locator('button[data-action="fork"]:not([disabled])').click();
  await confirmDialog();
  await page.locator('#flash', { hasText: 'Run forked' }).waitFor();
  await page.waitForURL((url) => /\/runs\/[0-9a-f-]{36}/.test(url.pathname) && !url.pathname.includes(source));
  const fork = page.url().match(/\/runs\/([0-9a-f-]{36})/)[1];
  await page.locator(`a[data-link="forked-from"][href="/runs/${source}"]`).waitFor();
  const detail = await apiGet(`/v1/runs/${fork}`);
  assert.equal(detail.forked_from.run_id, source);
  assert.equal(detail.forked_from.from_node, 'work');
  await until('the source lists its fork', async () => (await apiGet(`/v1/runs/${source}`)).forks.some((f) => f.run_id === fork));
  await page.goto(`${base}/runs/${source}`);
  await page.locator(`a[data-link="fork"][href="/runs/${fork}"]`).waitFor();
  await shot('run-fork');
});

test('a 1,000-node run draws', async () => {
  const t0 = Date.now();
  await page.goto(`${base}/runs/${runs.big}`);
  await page.locator('#graph svg.graph').waitFor();
  const ready = Date.now() - t0;
  assert.equal(await page.locator('svg.graph g.node').count(), 1002);
  const drawMs = Number(await page.locator('#graph').getAttribute('data-draw-ms'));
  console.log(`studio: 1,000-node graph laid out and drawn in ${drawMs.toFixed(0)} ms; page usable ${ready} ms after navigation`);
  await page.locator('g.node[data-node="t500"]').click();
  await page.locator('#inspector h2', { hasText: 'Node t500' }).waitFor();
  await shot('run-1000-nodes');
});

test('artifacts, claims and flowcharts pages show the ledger', async () => {
  await page.goto(`${base}/artifacts?node_type=decision`);
  const rows = page.locator('table tbody tr.clickable');
  await rows.first().waitFor();
  await shot('artifacts');
  await rows.first().click();
  await page.waitForURL(/\/artifacts\/[0-9a-f-]{36}$/);
  await page.getByText('Idempotency key').waitFor();
  await page.getByText('Content hash').waitFor();
  await shot('artifact');
  await page.goto(`${base}/claims`);
  await page.locator('table.claims tbody tr').first().waitFor();
  assert.ok((await page.locator('table.claims .badge').count()) > 0);
  await shot('claims');
  await page.goto(`${base}/flowcharts/fallback-route`);
  await page.locator('.fallback-badge').waitFor();
  await shot('flowchart');
});

test('the routing inspector shows fan-in and fallback; the problems of a draft sit on their nodes', async () => {
  await page.goto(`${base}/flowcharts/fallback-route`);
  const inspector = page.locator('section.routing-inspector');
  await inspector.getByText('Valid under this server’s rules.').waitFor();
  const route = inspector.locator('tr[data-node="route"]');
  assert.match(await route.innerText(), /fallback → to_triage/);
  assert.match(await inspector.locator('tr[data-node="start"]').innerText(), /all/);
  await page.goto(`${base}/validate`);
  const draft = {
    name: 'draft', nodes: [
      { id: 'start', type: 'start' }, { id: 'd', type: 'decision' },
      { id: 'done', type: 'end', fan_in: { custom: 5 } }],
    connectors: [{ id: 'c1', from: 'start', to: 'd' }, { id: 'c2', from: 'd', to: 'nowhere' }],
  };
  await page.locator('#draft').fill(JSON.stringify(draft, null, 2));
  await page.getByRole('button', { name: 'Check' }).click();
  await page.locator('#draft-result p[data-problems="4"]').waitFor();
  assert.equal(await page.locator('g.node[data-node="done"]').getAttribute('data-problems'), '2');
  assert.equal(await page.locator('g.node[data-node="done"] .bad').textContent(), '✕2');
  assert.equal(await page.locator('g.node[data-node="d"]').getAttribute('data-problems'), '1');
  assert.equal(await page.locator('g.node[data-node="start"]').getAttribute('data-problems'), '0');
  const done = page.locator('tr[data-node="done"]');
  assert.match(await done.innerText(), /custom: 5/);
  assert.equal(await done.locator('.invalid-chip').count(), 2);
  await page.locator('tr[data-connector="c2"] .invalid-chip', { hasText: 'unknown_node' }).waitFor();
  await shot('flowchart-check');
  // YAML is checked by the server too; its problems are listed.
  await page.locator('#draft').fill('name: y\nnodes:\n  - { id: start, type: start, colour: red }\nconnectors: []\n');
  await page.getByRole('button', { name: 'Check' }).click();
  await page.locator('ul.problems li', { hasText: 'nodes[0].colour' }).waitFor();
});

test('models: create, edit (Save disabled until changed), search, two-click delete', async () => {
  await page.goto(`${base}/models`);
  await page.locator('table.models').getByText('No models yet.').waitFor();
  await page.locator('.page-head').getByRole('link', { name: 'New Model' }).click();
  await page.waitForURL(/\/models\/new$/);
  const save = page.getByRole('button', { name: 'Save' });
  assert.equal(await save.isDisabled(), true);
  await page.locator('#m-name').fill('bad name!');
  await page.locator('#m-model_id').fill('gpt-test');
  assert.equal(await save.isDisabled(), true);
  await page.locator('#m-name-error').filter({ hasText: 'letters' }).waitFor();
  await page.locator('#m-name').fill('studio-gpt');
  await page.locator('#m-api_key_env').fill('OPENAI_API_KEY');
  assert.equal(await save.isDisabled(), false);
  await save.click();
  await page.waitForURL(/\/models$/);
  await page.locator('#flash', { hasText: 'Model studio-gpt created' }).waitFor();
  await page.locator('table.models').getByRole('link', { name: 'studio-gpt', exact: true }).click();
  await page.waitForURL(/\/models\/studio-gpt$/);
  assert.equal(await save.isDisabled(), true, 'nothing changed yet');
  await page.locator('#m-description').fill('edited in the console');
  assert.equal(await save.isDisabled(), false);
  await save.click();
  await page.locator('#flash', { hasText: 'Model studio-gpt saved' }).waitFor();
  assert.equal((await apiGet('/v1/models/studio-gpt')).spec.description, 'edited in the console');
  await page.locator('#m-q').fill('nothing-like-this');
  await page.getByText('No model matches the search.').waitFor();
  await page.locator('#m-q').fill('STUDIO');
  await page.locator('table.models').getByRole('link', { name: 'studio-gpt', exact: true }).waitFor();
  await shot('models');
  await page.locator('table.models').getByRole('link', { name: 'studio-gpt', exact: true }).click();
  const del = page.getByRole('button', { name: 'Delete' });
  await del.click();
  await page.getByRole('button', { name: 'Click again to delete' }).click();
  await page.locator('#flash', { hasText: 'Model studio-gpt deleted' }).waitFor();
  const gone = await fetch(`${base}/v1/models/studio-gpt`, { headers: { authorization: `Bearer ${token}` } });
  assert.equal(gone.status, 404);
});

test('no script errors on any page', () => {
  assert.deepEqual(errors, []);
});
