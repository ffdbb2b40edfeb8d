// Operator controls (docs/api.md#operator-controls): each asks for confirmation, then posts
// the control and reports the outcome in the shared flash area. `after(version)` is called
// with the stream version of the last event the control wrote, so the page can read its own
// write (`?min_version=`).

import { api } from '../api.js';
import { confirmAction, flash, navigate } from '../app.js';
import { h } from '../dom.js';

async function control({ path, body, question, okLabel, done, after }) {
  if (!(await confirmAction(question, okLabel))) return false;
  try {
    const r = await api(path, { method: 'POST', body: body || {} });
    const events = (r && r.events) || [];
    const last = events.length ? events[events.length - 1].stream_version : undefined;
    flash(r && r.deduplicated ? `${done} (already applied)` : done, 'ok');
    if (after) await after(last, r);
    return true;
  } catch (e) {
    flash(`${okLabel} failed: ${e.code}: ${e.message}`, 'error');
    return false;
  }
}

/** Run-level buttons for a run in `status`. */
export function runControls(runId, status, after) {
  const base = `/v1/runs/${runId}`;
  const button = (label, cls, enabled, opts) => h('button', {
    type: 'button', class: cls, disabled: !enabled, 'data-action': opts.action,
    onclick: () => control({ ...opts, after }),
  }, label);
  const running = status === 'running';
  const paused = status === 'paused';
  const cancelable = running || paused || status === 'canceling';
  const bar = h('div', { class: 'controls', role: 'toolbar', 'aria-label': 'Run controls' },
    button('Pause', '', running, { action: 'pause', path: `${base}/pause`, question: 'Pause this run? Nothing new is scheduled until it is resumed.', okLabel: 'Pause', done: 'Run paused' }),
    button('Resume', '', paused, { action: 'resume', path: `${base}/resume`, question: 'Resume this run?', okLabel: 'Resume', done: 'Run resumed' }),
    button('Cancel', 'danger', cancelable && status !== 'canceling', { action: 'cancel', path: `${base}/cancel`, question: 'Cancel this run? Running nodes are asked to stop.', okLabel: 'Cancel run', done: 'Cancel requested' }),
    button('Force cancel', 'danger', cancelable, { action: 'force-cancel', path: `${base}/cancel`, body: { force: true }, question: 'Force-cancel this run? It ends now, without waiting for running nodes.', okLabel: 'Force cancel', done: 'Run canceled' }),
    h('a', { class: 'button', href: `${base}/export`, download: `run-${runId}.jsonl` }, 'Export'));
  return bar;
}

const FINISHED = ['completed', 'failed', 'canceled'];

/** Node-level controls: retry, skip (with an output editor that must hold JSON), rewind, and
 *  on a finished run, fork from this node (`POST /v1/runs/{id}/fork`, which opens the new run). */
export function nodeControls(runId, nodeId, latest, after, runStatus) {
  const base = `/v1/runs/${runId}/nodes/${encodeURIComponent(nodeId)}`;
  const output = h('textarea', { id: 'skip-output', rows: 4, spellcheck: 'false', 'aria-describedby': 'skip-help' }, '{}');
  const help = h('p', { id: 'skip-help', class: 'small muted' }, 'The output the skipped node stands in with (JSON).');
  const skip = h('button', { type: 'button', 'data-action': 'skip' }, 'Skip with this output');
  const validate = () => {
    try {
      JSON.parse(output.value);
      output.removeAttribute('aria-invalid');
      help.textContent = 'The output the skipped node stands in with (JSON).';
      help.className = 'small muted';
      skip.disabled = false;
    } catch (e) {
      output.setAttribute('aria-invalid', 'true');
      help.textContent = `Not JSON: ${e.message}`;
      help.className = 'small error';
      skip.disabled = true;
    }
  };
  output.addEventListener('input', validate);
  skip.addEventListener('click', () => {
    let value;
    try { value = JSON.parse(output.value); } catch { validate(); return; }
    control({ path: `${base}/skip`, body: { output: value }, question: `Skip node ${nodeId} with the output given?`, okLabel: 'Skip', done: `Node ${nodeId} skipped`, after });
  });
  const failed = latest && ['failed', 'timed_out', 'canceled'].includes(latest.status);
  return h('section', { class: 'node-controls', 'aria-label': `Controls of node ${nodeId}` },
    h('h3', {}, 'Controls'),
    h('div', { class: 'controls' },
      h('button', { type: 'button', 'data-action': 'retry', disabled: !failed, onclick: () => control({ path: `${base}/retry`, question: `Retry node ${nodeId}? A new attempt is scheduled.`, okLabel: 'Retry', done: `Node ${nodeId} retried`, after }) }, 'Retry'),
      h('button', { type: 'button', 'data-action': 'rewind', disabled: !latest, onclick: () => control({ path: `${base}/rewind`, question: `Rewind to node ${nodeId}? It and everything downstream of it run again; upstream results are kept.`, okLabel: 'Rewind', done: `Rewound to node ${nodeId}`, after }) }, 'Rewind'),
      h('button', { type: 'button', 'data-action': 'fork', disabled: !FINISHED.includes(runStatus), title: 'A new run that keeps this run\'s results upstream of this node and runs it and what follows again', onclick: () => control({
        path: `/v1/runs/${runId}/fork`, body: { from_node: nodeId }, question: `Fork this run from node ${nodeId}? A new run starts; this one is unchanged.`, okLabel: 'Fork', done: 'Run forked',
        after: async (_, r) => { if (r && r.run_id) navigate(`/runs/${r.run_id}`); },
      }) }, 'Fork from here')),
    h('label', { for: 'skip-output' }, 'Skip output'), output, help, skip);
}
