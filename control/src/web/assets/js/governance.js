// The registry's governance views, used by pages/registry.js: a table per rule kind (rate limits,
// circuit breakers, black/white lists, version routes, interventions), the rule editor (JSON checked by
// the API's dry run, then published; a reviewed service's publish waits for approval), the pending
// review, the rule versions with rollback, and the per-version call statistics with the token service's
// budgets. Levels are the API's: read to see, publish to change; buttons a user could not use are not
// drawn, and a refusal is shown where it happened.
import * as api from './api.js';
import { h, table, field, badge, confirmDialog, errorBox, toast, clear } from './ui.js';

const list = (xs) => (xs && xs.length ? xs.join(', ') : 'everyone');
const num = (v, digits) => (v === undefined || v === null ? '' : Number(v).toFixed(digits));
export const utc = (ms) => (ms ? new Date(ms).toISOString().replace('T', ' ').replace(/\.\d+Z$/, '') : '');

function control(c) {
  if (!c || c.mode === 'reject') return 'reject';
  if (c.mode === 'warm_up') return `warm-up ${c.warm_up_s} s`;
  if (c.mode === 'queue') return `queue, wait ≤ ${c.max_wait_ms} ms`;
  return c.mode;
}

/**
 * The rules of a set as one table per kind; `prefix` makes the ids unique (`rules`, `pending`, `hist`).
 * Each row keeps the rule's index in the set (`#`): cluster-wide budgets and API errors name it.
 */
export function ruleTables(rules, prefix) {
  const indexed = (rules || []).map((r, i) => ({ ...r, i }));
  const of = (...kinds) => indexed.filter((r) => kinds.includes(r.kind));
  const idx = { key: 'i', label: '#', num: true };
  const yes = (b) => (b ? 'yes' : 'no');
  // The rules in force show every kind (an empty one says so); a proposal or an old version only its own.
  const block = (title, id, rows, columns) => (prefix !== 'rules' && rows.length === 0 ? null : h('section', { class: 'rule-kind' }, h('h3', {}, title),
    table({ id: `${prefix}-${id}`, caption: `${title} (${rows.length})`, rows, columns, empty: 'None.', pageSize: 50 })));
  return h('div', { class: 'rule-tables' },
    block('Rate limits', 'rate', of('rate_limit'), [idx,
      { key: 'scope', label: 'Counted per', value: (r) => r.scope || 'service' },
      { key: 'only', label: 'Applies to', value: (r) => list(r.only) },
      { key: 'qps', label: 'QPS', num: true, value: (r) => r.qps ?? '' },
      { key: 'concurrency', label: 'Concurrency', num: true, value: (r) => r.concurrency ?? '' },
      { key: 'control', label: 'Over the limit', value: (r) => control(r.control) },
      { key: 'cluster', label: 'Cluster-wide', value: (r) => yes(r.cluster), render: (r) => badge(yes(r.cluster), r.cluster ? 'ok' : '') }]),
    block('Circuit breakers', 'breaker', of('circuit_breaker'), [idx,
      { key: 'strategy', label: 'Strategy', value: (r) => r.strategy.replace('_', ' ') },
      { key: 'threshold', label: 'Threshold', num: true },
      { key: 'window_ms', label: 'Window (ms)', num: true },
      { key: 'min_calls', label: 'Min calls', num: true },
      { key: 'slow_ms', label: 'Slow (ms)', num: true, value: (r) => r.slow_ms ?? '' },
      { key: 'open_ms', label: 'Open (ms)', num: true }]),
    block('Black and white lists', 'access', of('access'), [idx,
      { key: 'allow', label: 'List', value: (r) => (r.allow ? 'allow only' : 'deny'), render: (r) => badge(r.allow ? 'allow only' : 'deny', r.allow ? 'ok' : 'bad') },
      { key: 'callers', label: 'Callers', value: (r) => (r.callers || []).join(', ') },
      { key: 'sources', label: 'Sources', value: (r) => (r.sources || []).join(', ') }]),
    block('Version and tag routes', 'route', of('route'), [idx,
      { key: 'callers', label: 'Callers', value: (r) => list(r.callers) },
      { key: 'version', label: 'Version' },
      { key: 'percent', label: 'Percent', num: true, value: (r) => `${r.percent}` }]),
    block('Cluster switch and load share', 'intervention', of('cluster_switch', 'load_share'), [idx,
      { key: 'kind', label: 'Intervention', value: (r) => (r.kind === 'cluster_switch' ? 'cluster switch' : 'load share') },
      { key: 'from', label: 'From cluster', value: (r) => r.from || '(every other)' },
      { key: 'to', label: 'To cluster' },
      { key: 'percent', label: 'Percent moved', num: true, value: (r) => (r.kind === 'load_share' ? r.percent : 100) }]));
}

const canPublish = (svc) => svc.level === 'publish';

/** The Rules tab: the set in force, the pending review, and (publish level) the editor. */
export async function rulesTab(panel, svc, svcPath, redraw) {
  const [set, pending] = await Promise.all([api.get(`${svcPath}/rules`), api.get(`${svcPath}/rules/pending`)]);
  const version = set ? set.version : 0;
  panel.append(h('p', { id: 'rules-version' }, set
    ? `Version ${set.version}, published ${utc(set.at_ms)} UTC by ${set.author}${set.approver ? `, approved by ${set.approver}` : ''}${set.message ? ` — ${set.message}` : ''}`
    : 'No rules published.'));
  panel.append(ruleTables(set ? set.rules : [], 'rules'));

  if (pending) {
    const box = h('section', { class: 'card', id: 'rules-pending', 'aria-labelledby': 'pending-title' });
    box.append(h('h3', { id: 'pending-title' }, 'Waiting for review'),
      h('p', {}, `Proposed by ${pending.author} at ${utc(pending.at_ms)} UTC against version ${pending.base_version}; editors: ${[...pending.editors].join(', ')}${pending.message ? ` — ${pending.message}` : ''}. Anyone with publish level who is not an editor may approve it.`),
      ruleTables(pending.rules, 'pending'));
    if (canPublish(svc)) {
      box.append(h('div', { class: 'row' },
        h('button', { type: 'button', id: 'rules-approve', onclick: async () => {
          if (!(await confirmDialog(`Approve and publish the rule change by ${pending.author} as version ${version + 1} of ${svc.service.name}?`, 'Approve'))) return;
          try { await api.post(`${svcPath}/rules/approve`, { version }); toast('rules approved'); redraw(); } catch (e) { box.append(errorBox(e)); }
        } }, 'Approve'),
        h('button', { type: 'button', id: 'rules-reject', onclick: async () => {
          if (!(await confirmDialog(`Drop the rule change proposed by ${pending.author}?`, 'Reject'))) return;
          try { await api.del(`${svcPath}/rules/pending`); toast('rule change rejected'); redraw(); } catch (e) { box.append(errorBox(e)); }
        } }, 'Reject')));
    }
    panel.append(box);
  }
  if (!canPublish(svc)) return;

  // The editor: the whole set as JSON, checked by the API (dry run) and published against `version`.
  const form = h('form', { class: 'card', id: 'rules-editor', 'aria-labelledby': 'editor-title' });
  const text = h('textarea', { id: 'rules-json', rows: 14, cols: 80, class: 'mono', spellcheck: 'false' });
  // Absent optional fields come back as null; leave them out of the text (the API's defaults).
  text.value = JSON.stringify(set ? set.rules : [], (k, v) => (v === null ? undefined : v), 2);
  const fText = field('Rules (JSON array)', text, 'One object per rule with its "kind"; see docs/registry.md. The API checks it.');
  const msg = h('input', { id: 'rules-message', type: 'text' });
  const fMsg = field('Message', msg);
  const out = h('div', { id: 'rules-check', role: 'status' });
  const parse = () => {
    fText.error('');
    try { return JSON.parse(text.value); } catch (ex) { fText.error(`not JSON: ${ex.message}`); return null; }
  };
  const apiError = (ex) => {
    if (ex.status === 403 || !ex.field || ex.field === 'version') { clear(out).append(errorBox(ex)); return; }
    fText.error(`${ex.message} (${ex.field})`);
  };
  form.append(h('h3', { id: 'editor-title' }, `Edit the rules (publishes version ${version + 1}${svc.service.review_rules ? ' after review' : ''})`),
    fText.el, fMsg.el,
    h('div', { class: 'row' },
      h('button', { type: 'button', id: 'rules-validate', onclick: async () => {
        clear(out);
        const rules = parse();
        if (rules === null) return;
        try {
          const r = await api.post(`${svcPath}/rules/check`, { rules });
          out.append(h('p', {}, `Valid: ${r.rules} rule${r.rules === 1 ? '' : 's'}.`));
        } catch (ex) { apiError(ex); }
      } }, 'Validate'),
      h('button', { type: 'submit', id: 'rules-publish' }, svc.service.review_rules ? 'Propose…' : 'Publish…')),
    out);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    clear(out);
    const rules = parse();
    if (rules === null) return;
    const what = svc.service.review_rules ? 'Propose' : 'Publish';
    if (!(await confirmDialog(`${what} ${rules.length} rule${rules.length === 1 ? '' : 's'} as version ${version + 1} of ${svc.service.name}?`, what))) return;
    try {
      const r = await api.put(`${svcPath}/rules`, { rules, message: msg.value, version });
      toast(r && r.state === 'pending' ? 'rule change waiting for review' : `rules version ${r.version} published`);
      redraw();
    } catch (ex) { apiError(ex); }
  });
  panel.append(form);
}

/** The History tab: rule versions (from the audit log), one shown as tables, rollback (publish level). */
export async function historyTab(panel, svc, svcPath, redraw) {
  const [versions, set] = await Promise.all([api.get(`${svcPath}/rules/history`), api.get(`${svcPath}/rules`)]);
  const current = set ? set.version : 0;
  const shown = h('div', { id: 'history-detail' });
  const show = (v) => { clear(shown).append(h('h3', {}, `Version ${v.version}`), ruleTables(v.rules || [], 'hist')); };
  panel.append(table({
    id: 'rules-history-table', caption: 'Rule versions, newest first', rows: versions, empty: 'No rule version published.',
    columns: [
      { key: 'version', label: 'Version', num: true },
      { key: 'at_ms', label: 'Published (UTC)', value: (v) => utc(v.at_ms) },
      { key: 'author', label: 'Author' },
      { key: 'approver', label: 'Approver' },
      { key: 'count', label: 'Rules', num: true, value: (v) => (v.rules || []).length },
      { key: 'message', label: 'Message' },
      { key: 'actions', label: 'Actions', value: () => '', render: (v) => h('span', { class: 'row' },
        h('button', { type: 'button', 'data-action': 'show', 'data-version': v.version, onclick: () => show(v) }, 'Show'),
        v.version === current ? badge('in force', 'ok') : canPublish(svc) ? h('button', {
          type: 'button', 'data-action': 'rollback', 'data-version': v.version, onclick: async () => {
            if (!(await confirmDialog(`Publish the rules of version ${v.version} again as version ${current + 1} of ${svc.service.name}${svc.service.review_rules ? ' (after review)' : ''}?`, 'Roll back'))) return;
            try {
              const r = await api.put(`${svcPath}/rules`, { rules: v.rules || [], message: `roll back to version ${v.version}`, version: current });
              toast(r && r.state === 'pending' ? 'rollback waiting for review' : `rolled back: version ${r.version}`);
              redraw();
            } catch (e) { panel.prepend(errorBox(e)); }
          } }, `Roll back to ${v.version}`) : null) },
    ],
  }), shown);
}

/** The Calls tab: per-version statistics reported to this node, and its cluster-wide token budgets. */
export async function callsTab(panel, svc, svcPath) {
  const [calls, tokens] = await Promise.all([api.get(`${svcPath}/calls`), api.get(`${svcPath}/tokens`)]);
  panel.append(h('p', { class: 'muted', id: 'calls-reporters' }, `Reported to this node; ${calls.reporters} reporter${calls.reporters === 1 ? '' : 's'} in the last minute.`));
  panel.append(table({
    id: 'calls-table', caption: 'Calls per instance version (since the node started, and the last minute)', rows: calls.versions, empty: 'No call reported.',
    columns: [
      { key: 'version', label: 'Version' },
      { key: 'calls', label: 'Calls', num: true },
      { key: 'errors', label: 'Errors', num: true },
      { key: 'error_ratio', label: 'Error rate', num: true, value: (v) => `${num(v.error_ratio * 100, 2)} %` },
      { key: 'avg_latency_ms', label: 'Avg latency (ms)', num: true, value: (v) => num(v.avg_latency_ms, 2) },
      { key: 'max_latency_ms', label: 'Max latency (ms)', num: true, value: (v) => num(v.max_latency_ms, 2) },
      { key: 'minute_calls', label: 'Calls, last min', num: true },
      { key: 'minute_errors', label: 'Errors, last min', num: true },
      { key: 'minute_avg_latency_ms', label: 'Avg latency, last min (ms)', num: true, value: (v) => num(v.minute_avg_latency_ms, 2) },
    ],
  }));
  panel.append(h('h3', {}, 'Token service (cluster-wide rate limits)'),
    h('p', { class: 'muted', id: 'tokens-clients' }, `Rule set version ${tokens.version}; ${tokens.clients} client${tokens.clients === 1 ? '' : 's'} asked in the last 5 s (each falls back to 1/${Math.max(1, tokens.clients)} of the rate when this node is unreachable).${tokens.truncated ? ' Only the first 1,000 budgets are listed.' : ''}`),
    table({
      id: 'tokens-table', caption: 'Budgets on this node', rows: tokens.budgets, empty: 'No client asked for tokens yet.',
      columns: [
        { key: 'rule', label: 'Rule #', num: true },
        { key: 'key', label: 'Key', value: (b) => b.key || '(service)' },
        { key: 'qps', label: 'QPS', num: true },
        { key: 'tokens', label: 'Tokens now', num: true, value: (b) => num(b.tokens, 1) },
        { key: 'last_used_ms', label: 'Last asked (UTC)', value: (b) => utc(b.last_used_ms) },
      ],
    }));
}
