// Tracing (docs/tracing.md): trace search, one trace's call tree as a waterfall, the observed dependency
// graph with calls per second, error rate and latency per edge, a service's slowest operations and p99 trend
// with regressions, and the SQL insights from traces (statements by digest, with the slowest samples' traces). Every query is the collector's own (`/v1/trace/...`).
import * as api from '../api.js';
import { h, table, field, select, link, badge, clear, tabs, graphView, lineChart } from '../ui.js';

const SVG = 'http://www.w3.org/2000/svg';
function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  for (const c of children.flat()) if (c !== null && c !== undefined) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}
const ms = (us) => (us / 1000).toFixed(3);
const when = (ns) => (ns ? new Date(ns / 1e6).toISOString().replace('T', ' ').replace('Z', '') : '');
const traceLink = (id) => h('a', { href: link('traces', { trace: id }), class: 'mono' }, id);
const SINCE = [['300', 'last 5 minutes'], ['3600', 'last hour'], ['21600', 'last 6 hours'], ['86400', 'last 24 hours']];

async function search(panel, params) {
  const form = h('form', { id: 'trace-search', class: 'card' });
  const inputs = {
    service: h('input', { id: 'ts-service', value: params.service || '' }),
    operation: h('input', { id: 'ts-operation', value: params.operation || '' }),
    min_duration_ms: h('input', { id: 'ts-min', type: 'number', min: '0', value: params.min_duration_ms || '' }),
    status: select([['any', 'any'], ['error', 'errors only'], ['ok', 'without errors']], params.status || 'any', { id: 'ts-status' }),
    attr: h('input', { id: 'ts-attr', value: params.attr || '', placeholder: 'db.system=mysql' }),
    since_s: select(SINCE, params.since_s || '3600', { id: 'ts-since' }),
  };
  form.append(h('div', { class: 'row' },
    field('Service', inputs.service).el, field('Operation', inputs.operation).el,
    field('Min duration (ms)', inputs.min_duration_ms).el, field('Status', inputs.status).el,
    field('Attributes', inputs.attr, 'KEY=VALUE[,KEY=VALUE]').el, field('Window', inputs.since_s).el,
    h('button', { type: 'submit', class: 'primary', id: 'ts-submit' }, 'Search')));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const q = { tab: 'search' };
    for (const [k, el] of Object.entries(inputs)) if (el.value) q[k] = el.value;
    location.hash = link('traces', q);
  });
  panel.append(form);
  const q = {};
  for (const k of Object.keys(inputs)) if (params[k]) q[k] = params[k];
  const r = await api.get(`/v1/trace/search${api.q({ ...q, limit: 200 })}`);
  panel.append(table({
    id: 'traces-table', caption: 'Traces, newest first', rows: r.traces, empty: 'No trace matches.',
    columns: [
      { key: 'trace_id', label: 'Trace', render: (t) => traceLink(t.trace_id) },
      { key: 'root', label: 'Root', value: (t) => `${t.root_service || '?'}: ${t.root_operation || '?'}` },
      { key: 'start_ns', label: 'Start (UTC)', value: (t) => t.start_ns, render: (t) => when(t.start_ns) },
      { key: 'duration_us', label: 'Duration (ms)', num: true, value: (t) => t.duration_us, render: (t) => ms(t.duration_us) },
      { key: 'spans', label: 'Spans', num: true },
      { key: 'errors', label: 'Errors', num: true, render: (t) => (t.errors ? badge(String(t.errors), 'bad') : '0') },
      { key: 'services', label: 'Services', value: (t) => t.services.join(', ') },
    ],
  }));
}

/** The spans of a call tree in depth-first order, with their depth. */
function flatten(roots) {
  const out = [];
  const stack = roots.slice().reverse().map((n) => [n, 0]);
  while (stack.length) {
    const [n, d] = stack.pop();
    out.push({ ...n, depth: d });
    for (const c of (n.children || []).slice().reverse()) stack.push([c, d + 1]);
  }
  return out;
}

/** A waterfall: one row per span, a bar from its offset for its duration on the trace's time axis. */
function waterfall(t, rows, onPick) {
  const W = 1000, L = 330, ROW = 22, T = 26;
  const total = Math.max(1, t.duration_us);
  const x = (us) => L + (us / total) * (W - L - 10);
  const svg = s('svg', { class: 'waterfall', viewBox: `0 0 ${W} ${T + rows.length * ROW + 6}`, role: 'img',
    'aria-label': `Call tree of trace ${t.trace_id}: ${rows.length} spans over ${ms(t.duration_us)} ms` },
  s('text', { x: L, y: 14 }, '0 ms'), s('text', { x: W - 90, y: 14 }, `${ms(t.duration_us)} ms`),
  s('line', { class: 'axis', x1: L, y1: T - 6, x2: W - 10, y2: T - 6 }),
  rows.map((r, i) => {
    const y = T + i * ROW;
    const label = `${r.service}: ${r.name}`;
    const g = s('g', { class: `span${r.status === 'error' ? ' error' : ''}`, tabindex: '0', role: 'button', 'aria-label': `${label}, ${ms(r.duration_us)} ms at +${ms(r.offset_us)} ms` },
      s('text', { x: 4 + r.depth * 12, y: y + 15 }, label.length > 44 - r.depth * 2 ? `${label.slice(0, 43 - r.depth * 2)}…` : label),
      s('rect', { x: x(r.offset_us).toFixed(1), y: y + 4, height: ROW - 8, width: Math.max(1.5, x(r.offset_us + r.duration_us) - x(r.offset_us)).toFixed(1) }),
      // The duration right of the bar, or inside its end when the bar reaches the right edge.
      x(r.offset_us + r.duration_us) + 80 > W
        ? s('text', { class: 'dur inside', x: (x(r.offset_us + r.duration_us) - 4).toFixed(1), y: y + 15, 'text-anchor': 'end' }, `${ms(r.duration_us)} ms`)
        : s('text', { class: 'dur', x: (x(r.offset_us + r.duration_us) + 4).toFixed(1), y: y + 15 }, `${ms(r.duration_us)} ms`));
    g.addEventListener('click', () => onPick(r));
    g.addEventListener('keydown', (e) => { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); onPick(r); } });
    return g;
  }));
  return svg;
}

async function trace(view, id) {
  const t = await api.get(`/v1/trace/traces/${api.seg(id)}`);
  const rows = flatten(t.roots);
  view.append(h('h2', { id: 'trace-title' }, `Trace ${t.trace_id}`),
    h('p', { class: 'muted' }, `${t.spans} spans, ${t.errors} errors, ${ms(t.duration_us)} ms, started ${when(t.start_ns)} UTC`));
  const detail = h('section', { class: 'card', id: 'span-detail', 'aria-live': 'polite' }, h('p', { class: 'muted' }, 'Pick a span for its attributes.'));
  const pick = (r) => {
    clear(detail);
    detail.append(h('h3', {}, `${r.service}: ${r.name} `, r.status === 'error' ? badge('error', 'bad') : badge(r.status || 'unset', r.status === 'ok' ? 'ok' : '')),
      h('p', { class: 'muted' }, `span ${r.span_id}${r.parent_id ? `, parent ${r.parent_id}` : ''}, ${r.kind}, +${ms(r.offset_us)} ms, ${ms(r.duration_us)} ms${r.status_message ? ` — ${r.status_message}` : ''}`),
      h('pre', { class: 'attributes' }, Object.entries(r.attributes || {}).map(([k, v]) => `${k} = ${typeof v === 'string' ? v : JSON.stringify(v)}`).join('\n') || '(no attributes)'));
  };
  view.append(h('div', { id: 'waterfall', class: 'card' }, waterfall(t, rows, pick)), detail);
  view.append(table({
    id: 'spans-table', caption: 'Spans in call order', rows, pageSize: 100,
    columns: [
      { key: 'name', label: 'Span', value: (r) => `${'· '.repeat(r.depth)}${r.name}` },
      { key: 'service', label: 'Service' },
      { key: 'offset_us', label: 'Start (+ms)', num: true, render: (r) => ms(r.offset_us) },
      { key: 'duration_us', label: 'Duration (ms)', num: true, render: (r) => ms(r.duration_us) },
      { key: 'status', label: 'Status', render: (r) => (r.status === 'error' ? badge('error', 'bad') : r.status) },
      { key: 'statement', label: 'Statement / peer', value: (r) => (r.attributes || {})['db.statement'] || (r.attributes || {})['peer.service'] || '' },
    ],
  }));
  pick(rows[0]);
}

async function dependencies(panel, params) {
  const since = params.since_s || '3600';
  const sel = select(SINCE, since, { id: 'deps-since' });
  sel.addEventListener('change', () => { location.hash = link('traces', { tab: 'dependencies', since_s: sel.value }); });
  panel.append(field('Window', sel).el);
  const r = await api.get(`/v1/trace/dependencies?since_s=${api.seg(since)}`);
  const names = [...new Set(r.edges.flatMap((e) => [e.from, e.to]))];
  const callers = new Set(r.edges.map((e) => e.from));
  // Calls per second: whole numbers from 10, two decimals down to 0.01, two significant digits below.
  const qps = (e) => (e.qps >= 10 ? e.qps.toFixed(0) : e.qps >= 0.01 || e.qps === 0 ? e.qps.toFixed(2) : e.qps.toPrecision(2));
  const lat = (v) => Number(v).toFixed(3);
  if (r.edges.length) {
    panel.append(h('div', { id: 'trace-graph' }, graphView({
      title: `Observed calls over ${r.window_s} s`, verb: 'calls',
      nodes: names.map((n) => ({ id: n, label: n, kind: callers.has(n) ? '' : 'leaf' })),
      edges: r.edges.map((e) => [e.from, e.to, `${qps(e)}/s${e.errors ? `, ${(e.error_rate * 100).toFixed(1)} % err` : ''}`]),
    })));
  }
  panel.append(table({
    id: 'deps-table', caption: 'Calls between services (a span whose parent is in another service, or a leaf span naming its peer)', rows: r.edges, empty: 'No call traced in this window.',
    columns: [
      { key: 'from', label: 'From' }, { key: 'to', label: 'To' },
      { key: 'calls', label: 'Calls', num: true }, { key: 'qps', label: 'Calls/s', num: true, render: qps },
      { key: 'errors', label: 'Errors', num: true }, { key: 'error_rate', label: 'Error rate', num: true, render: (e) => `${(e.error_rate * 100).toFixed(2)} %` },
      { key: 'p50', label: 'p50 (ms)', num: true, value: (e) => e.latency.p50_ms, render: (e) => lat(e.latency.p50_ms) },
      { key: 'p99', label: 'p99 (ms)', num: true, value: (e) => e.latency.p99_ms, render: (e) => lat(e.latency.p99_ms) },
      { key: 'max', label: 'max (ms)', num: true, value: (e) => e.latency.max_ms, render: (e) => lat(e.latency.max_ms) },
    ],
  }));
}

/** A service's operations by p99 (with their slowest trace) and each operation's p99 per hour, with
 * regressions flagged (an hour above 2 × the median p99 of the earlier ones). */
async function services(panel, params) {
  const deps = await api.get('/v1/trace/dependencies?since_s=86400');
  const known = [...new Set(deps.edges.flatMap((e) => [e.from, e.to]))].sort();
  const service = params.service || known[0] || '';
  const input = h('input', { id: 'svc-name', value: service, list: 'svc-names' });
  const form = h('form', { id: 'svc-form', class: 'row' }, field('Service', input).el,
    h('datalist', { id: 'svc-names' }, known.map((n) => h('option', { value: n }))),
    h('button', { type: 'submit', id: 'svc-submit' }, 'Show'));
  form.addEventListener('submit', (e) => { e.preventDefault(); location.hash = link('traces', { tab: 'services', service: input.value }); });
  panel.append(form);
  if (!service) { panel.append(h('p', { class: 'muted' }, 'No service traced in the last 24 hours.')); return; }
  const slow = await api.get(`/v1/trace/services/${api.seg(service)}/slowest?since_s=86400&limit=50`);
  panel.append(table({
    id: 'slowest-table', caption: `Operations of ${service} by p99, last 24 hours`, rows: slow.operations, empty: 'No operation.',
    columns: [
      { key: 'operation', label: 'Operation', render: (o) => h('span', { class: 'cell-text mono' }, o.operation) },
      { key: 'calls', label: 'Calls', num: true }, { key: 'errors', label: 'Errors', num: true },
      { key: 'p50', label: 'p50 (ms)', num: true, value: (o) => o.latency.p50_ms, render: (o) => o.latency.p50_ms.toFixed(3) },
      { key: 'p99', label: 'p99 (ms)', num: true, value: (o) => o.latency.p99_ms, render: (o) => o.latency.p99_ms.toFixed(3) },
      { key: 'slowest_trace', label: 'Slowest trace', value: (o) => o.slowest_trace || '', render: (o) => (o.slowest_trace ? traceLink(o.slowest_trace) : '') },
    ],
  }));
  const trend = await api.get(`/v1/trace/services/${api.seg(service)}/trend?hours=24`);
  const series = trend.operations.slice(0, 6).map((o) => ({ name: o.operation, points: o.hours.map((x) => [x.hour_start_ms, x.p99_ms]) }));
  panel.append(h('div', { class: 'charts', id: 'svc-trend' }, lineChart({ title: `p99 per hour of ${service}`, unit: 'ms', series })));
  const flagged = trend.operations.flatMap((o) => o.hours.filter((x) => x.regression).map((x) => ({ operation: o.operation, ...x })));
  panel.append(table({
    id: 'regressions-table', caption: `Hours whose p99 exceeds ${trend.regression_factor} × the median of the earlier hours`, rows: flagged, empty: 'No regression.',
    columns: [
      { key: 'operation', label: 'Operation' },
      { key: 'hour_start_ms', label: 'Hour (UTC)', value: (x) => new Date(x.hour_start_ms).toISOString().slice(0, 13).replace('T', ' ') },
      { key: 'calls', label: 'Calls', num: true }, { key: 'p99_ms', label: 'p99 (ms)', num: true },
    ],
  }));
}

async function sql(panel, params) {
  const since = params.since_s || '3600';
  const sel = select(SINCE, since, { id: 'sql-since' });
  sel.addEventListener('change', () => { location.hash = link('traces', { tab: 'sql', since_s: sel.value }); });
  panel.append(field('Window', sel).el);
  const r = await api.get(`/v1/trace/sql?since_s=${api.seg(since)}&limit=200`);
  panel.append(table({
    id: 'sql-table', caption: 'Traced statements by digest, by total time', rows: r.digests, empty: 'No traced statement in this window.',
    columns: [
      { key: 'digest', label: 'Digest', render: (d) => h('span', { class: 'cell-text mono' }, d.digest) },
      { key: 'db_system', label: 'System' },
      { key: 'calls', label: 'Calls', num: true }, { key: 'errors', label: 'Errors', num: true },
      { key: 'total_ms', label: 'Total (ms)', num: true, render: (d) => d.total_ms.toFixed(3) },
      { key: 'p50', label: 'p50 (ms)', num: true, value: (d) => d.latency.p50_ms, render: (d) => d.latency.p50_ms.toFixed(3) },
      { key: 'p99', label: 'p99 (ms)', num: true, value: (d) => d.latency.p99_ms, render: (d) => d.latency.p99_ms.toFixed(3) },
      { key: 'services', label: 'Services', value: (d) => d.services.join(', ') },
      { key: 'slow', label: 'Slowest traces', value: (d) => d.slow_samples.map((x) => x.trace_id).join(' '),
        render: (d) => h('span', {}, d.slow_samples.map((x) => h('span', { class: 'row' }, traceLink(x.trace_id), ` ${x.duration_ms.toFixed(3)} ms${x.backend ? ` on ${x.backend}` : ''}`))) },
    ],
  }));
}

export const page = {
  id: 'traces',
  title: 'Traces',
  nav: true,
  async render(view, params) {
    view.append(h('h1', {}, 'Traces'));
    if (params.trace) {
      view.append(h('p', {}, h('a', { href: link('traces') }, '← Trace search')));
      return trace(view, params.trace);
    }
    view.append(tabs([
      { id: 'search', label: 'Search', render: (p) => search(p, params) },
      { id: 'dependencies', label: 'Dependencies', render: (p) => dependencies(p, params) },
      { id: 'services', label: 'Services', render: (p) => services(p, params) },
      { id: 'sql', label: 'SQL', render: (p) => sql(p, params) },
    ], params.tab || 'search'));
    return undefined;
  },
};
