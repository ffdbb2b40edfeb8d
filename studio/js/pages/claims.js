// Claims over the whole ledger (GET /v1/claims): pass / fail / insufficient_evidence, counts,
// and links to the runs of the evidence.

import { api } from '../api.js';
import { badge, h } from '../dom.js';
import { shortId } from '../format.js';

function evidenceLinks(list) {
  if (!Array.isArray(list) || !list.length) return h('span', { class: 'muted' }, 'none');
  return h('ul', { class: 'evidence' }, list.slice(0, 10).map((e) => {
    const run = e.run_id || (typeof e.stream_id === 'string' && e.stream_id.startsWith('run-') ? e.stream_id.slice(4) : null);
    const label = `${e.event_type || 'event'}${e.stream_version ? ` v${e.stream_version}` : ''}`;
    return h('li', { title: e.message || '' }, run ? h('a', { href: `/runs/${run}` }, `${shortId(run)} ${label}`) : label,
      e.message ? h('span', { class: 'small muted' }, ` ${e.message}`) : null);
  }), list.length > 10 ? h('li', { class: 'muted' }, `+${list.length - 10} more`) : null);
}

export async function claimsPage({ main }) {
  const data = await api('/v1/claims');
  const items = data.items || [];
  const counts = { pass: 0, fail: 0, insufficient_evidence: 0 };
  for (const c of items) counts[c.status] = (counts[c.status] || 0) + 1;
  main.append(h('h1', {}, 'Claims'),
    h('p', { class: 'summary' }, badge('pass'), ` ${counts.pass}  `, badge('fail'), ` ${counts.fail}  `, badge('insufficient_evidence'), ` ${counts.insufficient_evidence}`),
    h('div', { class: 'table-wrap' }, h('table', { class: 'claims' },
      h('thead', {}, h('tr', {}, ['Claim', 'Severity', 'Status', 'Checked', 'Violations', 'Violating evidence', 'Supporting evidence'].map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, items.map((c) => h('tr', { class: `claim-${c.status}` },
        h('td', {}, h('strong', {}, c.id), h('br'), h('span', { class: 'small' }, c.statement)),
        h('td', {}, c.severity), h('td', {}, badge(c.status)), h('td', {}, String(c.checked ?? '—')), h('td', {}, String(c.violations ?? 0)),
        h('td', {}, evidenceLinks(c.evidence && c.evidence.violating)),
        h('td', {}, evidenceLinks(c.evidence && c.evidence.supporting))))))));
  return null;
}
