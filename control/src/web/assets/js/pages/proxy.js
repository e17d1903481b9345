// One proxy, through the center: its admin port's views (listeners, backends with state/lag/latency, pools,
// hot and big keys, command stats, query digests, slow log, running config) as tables and charts, and the
// actions (backend offline/online, config reload) behind a confirmation. Reads need `read` on the proxy's
// namespace, actions `publish`.
import * as api from '../api.js';
import { h, clear, table, tabs, errorBox, toast, confirmDialog, lineChart, barChart, stateBadge, link } from '../ui.js';

const MAX_SAMPLES = 150;
const samples = new Map(); // proxy key -> [{t, info}]

function base(key) { return `/console/api/proxies/${key.split('/').map(api.seg).join('/')}`; }

/** Admin tables as rows of objects keyed by column name. */
function rowsOf(t) { return t.rows.map((r) => Object.fromEntries(t.columns.map((c, i) => [c, r[i] ?? '']))); }

function genericTable(t, id, extra) {
  const rows = rowsOf(t);
  const numeric = (c) => rows.length > 0 && rows.every((r) => r[c] === '-' || r[c] === '' || !isNaN(Number(r[c])));
  const columns = t.columns.map((c) => ({ key: c, label: c.replace(/_/g, ' ').toLowerCase(), num: numeric(c) }));
  if (extra) columns.push(extra);
  return table({ id, rows, columns, caption: t.name ? `Listener ${t.name}` : undefined });
}

async function view(key, name, n) { return api.get(`${base(key)}/${name}${n ? `?n=${n}` : ''}`); }

function tablesTab(key, name, id, opts) {
  return async (panel) => {
    const r = await view(key, name, opts && opts.n);
    if (r.tables.length === 0) panel.append(h('p', { class: 'muted' }, 'Nothing to show.'));
    for (const t of r.tables) {
      if (opts && opts.bars) panel.append(barChart({ title: `${opts.bars} ${t.name}`, items: rowsOf(t).map((x) => ({ label: x.KEY, value: Number(x[t.columns[1]]) || 0 })) }));
      panel.append(genericTable(t, `${id}${t.name ? `-${t.name}` : ''}`, opts && opts.extra && opts.extra(panel)));
      for (const note of t.notes) panel.append(h('p', { class: 'muted' }, note));
    }
  };
}

function sample(key, info) {
  const list = samples.get(key) || [];
  list.push({ t: Date.now(), info });
  while (list.length > MAX_SAMPLES) list.shift();
  samples.set(key, list);
}

/** Per-second rate of a counter between samples: [[t, rate]]. */
function rate(list, pick) {
  const out = [];
  for (let i = 1; i < list.length; i++) {
    const a = Number(pick(list[i - 1].info)), b = Number(pick(list[i].info));
    const dt = (list[i].t - list[i - 1].t) / 1000;
    if (!isNaN(a) && !isNaN(b) && dt > 0) out.push([list[i].t, Math.max(0, (b - a) / dt)]);
  }
  return out;
}

function drawCharts(holder, key) {
  const list = samples.get(key) || [];
  clear(holder);
  if (list.length < 2) { holder.append(h('p', { class: 'muted' }, 'Collecting samples (every 2 s)…')); return; }
  const last = list[list.length - 1].info;
  const listeners = Object.keys(last.Listeners || {});
  const backends = Object.keys(last.Backends || {});
  const sec = (s, k, f) => (i) => ((i[s] || {})[k] || {})[f];
  holder.append(h('div', { class: 'charts' },
    lineChart({ title: 'Requests per listener', unit: 'req/s', series: listeners.map((l) => ({ name: l.replace(/^listener_/, ''), points: rate(list, sec('Listeners', l, 'requests')) })) }),
    lineChart({ title: 'Errors per listener', unit: 'err/s', series: listeners.map((l) => ({ name: l.replace(/^listener_/, ''), points: rate(list, sec('Listeners', l, 'errors')) })) }),
    lineChart({ title: 'Requests per backend', unit: 'req/s', series: backends.map((b) => ({ name: b.replace(/^backend_/, ''), points: rate(list, sec('Backends', b, 'requests')) })) }),
    lineChart({ title: 'Errors per backend', unit: 'err/s', series: backends.map((b) => ({ name: b.replace(/^backend_/, ''), points: rate(list, sec('Backends', b, 'errors')) })) }),
    lineChart({ title: 'Backend latency', unit: 'µs', series: backends.map((b) => ({ name: b.replace(/^backend_/, ''), points: list.map((x) => [x.t, Number(sec('Backends', b, 'latency_us')(x.info)) || 0]) })) }),
  ));
}

/**
 * The last hour from the center's own history: the health windows (requests and errors of the proxy's
 * clients, every 10 s by default) the proxy sent with its reports, kept on the server (`web::history`), so
 * this chart has data as soon as the page opens.
 */
async function drawHistory(holder, key) {
  const r = await api.get(`/console/api/history/${key.split('/').map(api.seg).join('/')}?since_s=3600`);
  const pts = r.points;
  const chart = lineChart({
    title: 'Clients, last hour (reported windows)', unit: '/s',
    series: [
      { name: 'requests', points: pts.map((p) => [p.at_ms, p.requests_per_s]) },
      { name: 'errors', points: pts.map((p) => [p.at_ms, p.errors_per_s]) },
    ],
  });
  // Latency per listener (p50 and p99 of each window, as the proxy measured them), one chart per listener.
  const names = [...new Set(pts.flatMap((p) => (p.latency || []).map((l) => l.listener)))].slice(0, 8);
  const latency = names.map((n) => {
    const of = (f) => pts.flatMap((p) => (p.latency || []).filter((l) => l.listener === n).map((l) => [p.at_ms, l[f]]));
    return lineChart({
      title: `Latency ${n}, last hour`, unit: 'µs',
      series: [{ name: 'p50', points: of('p50_us') }, { name: 'p99', points: of('p99_us') }, { name: 'p99.9', points: of('p999_us') }],
    });
  });
  holder.replaceChildren(h('div', { class: 'charts' }, chart),
    h('div', { class: 'charts', id: 'proxy-latency' }, latency),
    h('p', { class: 'muted', id: 'proxy-latency-count' }, names.length
      ? `Latency of ${names.length} listener(s): ${names.map((n) => `${n} ${pts.filter((p) => (p.latency || []).some((l) => l.listener === n)).length} windows`).join(', ')}.`
      : 'No latency reported yet.'),
    h('p', { class: 'muted', id: 'proxy-history-count' }, pts.length
      ? `${pts.length} windows reported (the center keeps ${r.max_points}); total ${pts.reduce((a, p) => a + p.requests, 0)} requests, ${pts.reduce((a, p) => a + p.errors, 0)} errors.`
      : 'No health window reported yet (a proxy sends one every 10 s).'));
}

export const page = {
  id: 'proxy',
  title: 'Proxy',
  nav: false,
  async render(viewEl, params, ctx) {
    const key = params.key || '';
    viewEl.append(h('p', { class: 'row' }, h('a', { href: link('proxies') }, '← Proxy fleet'),
      h('a', { href: link('moves', { key }), id: 'proxy-moves' }, 'Online moves (slots, reshard) →')));
    viewEl.append(h('h1', {}, `Proxy ${key.split('/').pop()}`), h('p', { class: 'muted' }, `config from ${key.split('/').slice(0, 4).join('/')}`));
    const summary = h('div', { class: 'card', id: 'proxy-summary' });
    viewEl.append(summary);
    const charts = h('div', { id: 'proxy-charts' });
    let hist = null;
    let histTimer = null;
    let chartsShown = false;
    const poll = async () => {
      const r = await view(key, 'info');
      sample(key, r.info);
      const s = r.info.Server || {};
      summary.replaceChildren(h('div', { class: 'row' },
        h('span', {}, `admin ${r.admin}`), h('span', {}, `version ${s.furrow_version || '?'}`),
        h('span', { id: 'proxy-generation' }, `config generation ${s.config_generation || '?'}`),
        h('span', {}, `uptime ${s.uptime_in_seconds || '?'} s`), h('span', { class: 'muted' }, s.config_origin || '')));
      if (chartsShown) drawCharts(charts, key);
    };
    try { await poll(); } catch (e) { summary.append(errorBox(e)); }
    ctx.every(2000, () => poll().catch(() => {}));
    const backendActions = (panel) => ({
      key: 'actions', label: 'Actions', value: () => '', render: (b) => {
        const target = `${b.GROUP}/${b.NAME}`;
        const act = async (action) => {
          if (!(await confirmDialog(`Take backend ${target} ${action === 'offline' ? 'offline (no new requests)' : 'back online'} on ${key.split('/').pop()}?`, action === 'offline' ? 'Take offline' : 'Put online'))) return;
          try {
            await api.post(`${base(key)}/action`, { action, backend: target });
            toast(`${target} ${action}`);
            clear(panel);
            await tablesTab(key, 'backends', 'backends-table', { extra: backendActions })(panel);
          } catch (e) { panel.prepend(errorBox(e)); }
        };
        return h('span', { class: 'row' }, stateBadge(b.STATE),
          b.STATE === 'offline'
            ? h('button', { type: 'button', 'aria-label': `Put ${target} online`, onclick: () => act('online') }, 'Online')
            : h('button', { type: 'button', 'aria-label': `Take ${target} offline`, onclick: () => act('offline') }, 'Offline'));
      },
    });
    viewEl.append(tabs([
      { id: 'overview', label: 'Overview', render: async (p) => {
        chartsShown = true;
        hist = h('div', { id: 'proxy-history' });
        p.append(h('h2', {}, 'History'), hist, h('h2', {}, 'Live (sampled while this page is open)'), charts);
        drawCharts(charts, key);
        await drawHistory(hist, key);
        // One refresh timer for the page, however often the tab is selected.
        if (!histTimer) histTimer = ctx.every(10000, () => { if (chartsShown) drawHistory(hist, key).catch(() => {}); });
      } },
      { id: 'listeners', label: 'Listeners', render: tablesTab(key, 'listeners', 'listeners-table') },
      { id: 'backends', label: 'Backends', render: tablesTab(key, 'backends', 'backends-table', { extra: backendActions }) },
      { id: 'pools', label: 'Pools', render: tablesTab(key, 'pools', 'pools-table') },
      { id: 'hotkeys', label: 'Hot keys', render: tablesTab(key, 'hotkeys', 'hotkeys-table', { bars: 'Hot keys' }) },
      { id: 'bigkeys', label: 'Big keys', render: tablesTab(key, 'bigkeys', 'bigkeys-table', { bars: 'Big keys' }) },
      { id: 'commandstats', label: 'Command stats', render: tablesTab(key, 'commandstats', 'commandstats-table') },
      { id: 'digests', label: 'Query digests', render: tablesTab(key, 'digests', 'digests-table', { n: 100 }) },
      { id: 'slowlog', label: 'Slow log', render: tablesTab(key, 'slowlog', 'slowlog-table', { n: 100 }) },
      { id: 'config', label: 'Config', render: async (p) => {
        const r = await view(key, 'config');
        const out = h('div', {});
        p.append(h('div', { class: 'row' }, h('button', { type: 'button', id: 'reload', onclick: async () => {
          if (!(await confirmDialog('Reload the proxy\'s config? An invalid config changes nothing.', 'Reload'))) return;
          try { const a = await api.post(`${base(key)}/action`, { action: 'reload' }); out.replaceChildren(h('p', { role: 'status' }, a.reply)); } catch (e) { out.replaceChildren(errorBox(e)); }
        } }, 'Reload config')), out, h('pre', { id: 'proxy-config' }, r.text));
      } },
    ], params.tab, (id) => { if (id !== 'overview') chartsShown = false; window.history.replaceState(null, "", link("proxy", { key, tab: id })); }));
  },
};
