// Shared components of the console: a DOM builder, tables with sort/filter/paging, a diff view, SVG
// time-series and bar charts, tabs, a confirmation dialog, error boxes. Everything is built with
// createElement/textContent: API data never goes through innerHTML.

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'text') el.textContent = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const SVG = 'http://www.w3.org/2000/svg';
function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  for (const c of children.flat(Infinity)) if (c !== null && c !== undefined) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

export function clear(el) { while (el.firstChild) el.removeChild(el.firstChild); return el; }

/** An error as an alert box: the API's code, message and field. */
export function errorBox(err) {
  const field = err && err.field ? ` (field ${err.field})` : '';
  const code = err && err.code ? `${err.code}: ` : '';
  return h('div', { class: 'alert', role: 'alert' }, `${code}${(err && err.message) || err}${field}`);
}

export function toast(msg) {
  const t = document.getElementById('toast');
  t.textContent = msg;
  t.classList.add('show');
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => t.classList.remove('show'), 2500);
}

/** Asks before an action; resolves to true when confirmed. */
export function confirmDialog(text, okLabel) {
  const d = document.getElementById('confirm');
  document.getElementById('confirm-text').textContent = text;
  document.getElementById('confirm-ok').textContent = okLabel || 'Confirm';
  return new Promise((resolve) => {
    d.addEventListener('close', () => resolve(d.returnValue === 'ok'), { once: true });
    d.returnValue = '';
    d.showModal();
    document.getElementById('confirm-cancel').focus();
  });
}

export function badge(text, kind) { return h('span', { class: `badge ${kind || ''}` }, text); }

export function stateBadge(state) {
  const k = { up: 'ok', applied: 'ok', healthy: 'ok', ejected: 'bad', rejected: 'bad', offline: 'warn', down: 'bad' }[state];
  return badge(state, k);
}

/**
 * A table with sort (click a header), filter (text over every cell) and paging.
 * columns: [{key, label, num?, render?(row) -> Node|string, value?(row) -> sortable}]
 */
export function table({ columns, rows, pageSize = 25, caption, id, empty }) {
  const state = { sort: null, dir: 1, filter: '', page: 0 };
  const wrap = h('div', { class: 'table-block', id });
  const filterId = `f-${Math.random().toString(36).slice(2, 8)}`;
  const filter = h('input', { id: filterId, type: 'search', placeholder: 'Filter', 'aria-label': `Filter ${caption || 'rows'}` });
  const count = h('span', { class: 'muted' });
  const tbody = h('tbody');
  const pager = h('div', { class: 'pager' });
  const value = (c, r) => (c.value ? c.value(r) : r[c.key]);
  const text = (c, r) => { const v = value(c, r); return v === undefined || v === null ? '' : String(v); };
  const heads = columns.map((c, i) => {
    const b = h('button', { type: 'button', onclick: () => {
      if (state.sort === i) state.dir = -state.dir; else { state.sort = i; state.dir = 1; }
      draw();
    } }, c.label);
    return h('th', { scope: 'col', class: c.num ? 'num' : '', 'aria-sort': 'none' }, b);
  });
  function draw() {
    const f = state.filter.toLowerCase();
    let list = rows.filter((r) => !f || columns.some((c) => text(c, r).toLowerCase().includes(f)));
    if (state.sort !== null) {
      const c = columns[state.sort];
      list = list.slice().sort((a, b) => {
        const x = value(c, a), y = value(c, b);
        const nx = Number(x), ny = Number(y);
        const cmp = c.num && !isNaN(nx) && !isNaN(ny) ? nx - ny : String(x ?? '').localeCompare(String(y ?? ''));
        return cmp * state.dir;
      });
    }
    heads.forEach((th, i) => th.setAttribute('aria-sort', state.sort === i ? (state.dir > 0 ? 'ascending' : 'descending') : 'none'));
    const pages = Math.max(1, Math.ceil(list.length / pageSize));
    state.page = Math.min(state.page, pages - 1);
    clear(tbody);
    const shown = list.slice(state.page * pageSize, (state.page + 1) * pageSize);
    for (const r of shown) {
      tbody.append(h('tr', {}, columns.map((c) => {
        const content = c.render ? c.render(r) : h('span', { class: 'cell-text' }, text(c, r));
        return h('td', { class: c.num ? 'num' : '' }, content);
      })));
    }
    if (shown.length === 0) tbody.append(h('tr', {}, h('td', { colspan: columns.length, class: 'muted' }, empty || 'Nothing here.')));
    count.textContent = `${list.length} of ${rows.length}`;
    clear(pager);
    if (pages > 1) {
      pager.append(
        h('button', { type: 'button', disabled: state.page === 0, onclick: () => { state.page--; draw(); } }, 'Previous'),
        h('span', {}, `Page ${state.page + 1} of ${pages}`),
        h('button', { type: 'button', disabled: state.page >= pages - 1, onclick: () => { state.page++; draw(); } }, 'Next'));
    }
  }
  filter.addEventListener('input', () => { state.filter = filter.value; state.page = 0; draw(); });
  const t = h('table', {}, caption ? h('caption', { class: 'muted' }, caption) : null, h('thead', {}, h('tr', {}, heads)), tbody);
  wrap.append(h('div', { class: 'table-tools' }, filter, count), h('div', { class: 'table-wrap' }, t), pager);
  draw();
  return wrap;
}

/** A typed value as short text. */
export function valueText(item) {
  if (!item) return '';
  const v = item.value !== undefined && item.type === undefined ? item.value : item;
  if (!v || v.type === undefined) return JSON.stringify(v);
  if (v.type === 'document') return `[${v.value.format}] ${v.value.text}`;
  if (v.type === 'string') return v.value;
  return JSON.stringify(v.value);
}

/** A diff `{added, removed, changed: {key: [old, new]}}` as a table, one row per key. */
export function diffView(diff) {
  const rows = [];
  for (const [k, v] of Object.entries(diff.added || {})) rows.push(['added', k, '', valueText(v)]);
  for (const [k, v] of Object.entries(diff.removed || {})) rows.push(['removed', k, valueText(v), '']);
  for (const [k, [a, b]] of Object.entries(diff.changed || {})) rows.push(['changed', k, valueText(a), valueText(b)]);
  rows.sort((a, b) => a[1].localeCompare(b[1]));
  if (rows.length === 0) return h('p', { class: 'muted diff-empty' }, 'No differences.');
  const sign = { added: '+', removed: '−', changed: '~' };
  return h('table', { class: 'diff' },
    h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Change'), h('th', { scope: 'col' }, 'Key'), h('th', { scope: 'col' }, 'Before'), h('th', { scope: 'col' }, 'After'))),
    h('tbody', {}, rows.map(([kind, k, a, b]) => h('tr', { class: kind },
      h('td', {}, h('span', { 'aria-hidden': 'true' }, `${sign[kind]} `), kind),
      h('td', { class: 'mono' }, k), h('td', { class: 'mono' }, h('span', { class: 'cell-text' }, a)), h('td', { class: 'mono' }, h('span', { class: 'cell-text' }, b))))));
}

function fmt(n) {
  if (!isFinite(n)) return '0';
  const a = Math.abs(n);
  if (a >= 1e6) return `${(n / 1e6).toFixed(1)}M`;
  if (a >= 1e3) return `${(n / 1e3).toFixed(1)}k`;
  return a >= 10 || n === 0 ? n.toFixed(0) : n.toFixed(2);
}

/** A small SVG line chart: series [{name, points: [[t_ms, value]]}]. */
export function lineChart({ title, series, unit }) {
  const W = 400, H = 180, L = 44, R = 8, T = 24, B = 20;
  const all = series.flatMap((x) => x.points);
  const t0 = all.length ? Math.min(...all.map((p) => p[0])) : Date.now() - 60000;
  const t1 = Math.max(...all.map((p) => p[0]), t0 + 1000);
  const peak = Math.max(0, ...all.map((p) => p[1]));
  const vmax = peak > 0 ? peak : 1;
  const x = (t) => L + ((t - t0) / (t1 - t0)) * (W - L - R);
  const y = (v) => H - B - (v / vmax) * (H - T - B);
  const desc = series.map((sr) => `${sr.name}: ${fmt(sr.points.length ? sr.points[sr.points.length - 1][1] : 0)} ${unit || ''}`).join('; ');
  const svg = s('svg', { class: 'chart', viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': `${title}. Latest: ${desc}` },
    s('text', { x: L, y: 14 }, `${title}${unit ? ` (${unit})` : ''}`),
    s('line', { class: 'axis', x1: L, y1: H - B, x2: W - R, y2: H - B }),
    s('line', { class: 'axis', x1: L, y1: T, x2: L, y2: H - B }),
    s('text', { x: 2, y: T + 4 }, fmt(vmax)),
    s('text', { x: 2, y: H - B }, '0'),
    s('text', { x: L, y: H - 4 }, new Date(t0).toLocaleTimeString()),
    s('text', { x: W - R - 60, y: H - 4 }, new Date(t1).toLocaleTimeString()),
    series.map((sr, i) => s('polyline', { class: `s${i % 6}`, points: sr.points.map((p) => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(' ') })),
    series.map((sr, i) => sr.points.map((p) => s('circle', { class: `s${i % 6}`, cx: x(p[0]).toFixed(1), cy: y(p[1]).toFixed(1), r: 2 }))),
    s('g', { class: 'legend' }, series.slice(0, 6).map((sr, i) => [
      s('rect', { class: `s${i}`, x: W - R - 120, y: T + i * 14, width: 8, height: 8 }),
      s('text', { x: W - R - 108, y: T + 8 + i * 14 }, sr.name.slice(0, 18)),
    ])));
  return svg;
}

/** Horizontal bars: [{label, value}], largest first. */
export function barChart({ title, items }) {
  const list = items.slice().sort((a, b) => b.value - a.value).slice(0, 20);
  const W = 400, row = 18, H = 24 + list.length * row, L = 150;
  const max = Math.max(1, ...list.map((i) => i.value));
  return s('svg', { class: 'bars', viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': `${title}: ${list.map((i) => `${i.label} ${i.value}`).join(', ')}` },
    s('text', { x: 0, y: 14 }, title),
    list.map((it, i) => [
      s('text', { x: 0, y: 24 + i * row + 12 }, it.label.length > 22 ? `${it.label.slice(0, 21)}…` : it.label),
      s('rect', { x: L, y: 24 + i * row + 2, height: row - 6, width: Math.max(1, ((W - L - 50) * it.value) / max) }),
      s('text', { x: L + ((W - L - 50) * it.value) / max + 4, y: 24 + i * row + 12 }, String(it.value)),
    ]));
}

/**
 * A directed graph (dependencies, call graphs): nodes [{id, label, kind?}], edges [[from, to, label?]] (the
 * label, e.g. calls per second, is drawn at the edge's middle); `verb` words an edge for screen readers.
 * Layered layout: a node sits one column right of the deepest node that points at it (cycles are cut),
 * nodes of a column stacked in order. Also gives a text list of the edges for screen readers.
 */
export function graphView({ title, nodes, edges, verb }) {
  const ids = new Map(nodes.map((n, i) => [n.id, i]));
  const level = nodes.map(() => 0);
  // Longest-path layering by relaxation, at most |nodes| rounds (enough without cycles; cuts cycles).
  for (let round = 0; round < nodes.length; round++) {
    let moved = false;
    for (const [a, b] of edges) {
      const i = ids.get(a), j = ids.get(b);
      if (i === undefined || j === undefined || i === j) continue;
      if (level[j] < level[i] + 1 && level[i] + 1 < nodes.length) { level[j] = level[i] + 1; moved = true; }
    }
    if (!moved) break;
  }
  const cols = new Map();
  nodes.forEach((n, i) => { const c = cols.get(level[i]) || []; c.push(i); cols.set(level[i], c); });
  const NW = 150, NH = 30, GX = 70, GY = 18;
  const pos = nodes.map(() => [0, 0]);
  for (const [lv, list] of cols) list.forEach((i, k) => { pos[i] = [10 + lv * (NW + GX), 30 + k * (NH + GY)]; });
  const W = 20 + (Math.max(0, ...level) + 1) * (NW + GX);
  const H = 40 + Math.max(1, ...[...cols.values()].map((c) => c.length)) * (NH + GY);
  const arrows = s('defs', {}, s('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 10, refY: 5, markerWidth: 8, markerHeight: 8, orient: 'auto-start-reverse' },
    s('path', { d: 'M 0 0 L 10 5 L 0 10 z', class: 'arrowhead' })));
  const svg = s('svg', { class: 'graph', viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: 'img', 'aria-label': title },
    arrows, s('text', { x: 10, y: 16, class: 'graph-title' }, title),
    edges.filter(([a, b]) => ids.has(a) && ids.has(b)).map(([a, b, label]) => {
      const [x1, y1] = pos[ids.get(a)], [x2, y2] = pos[ids.get(b)];
      const line = s('line', { class: 'edge', x1: x1 + NW, y1: y1 + NH / 2, x2, y2: y2 + NH / 2, 'marker-end': 'url(#arrow)' });
      if (!label) return line;
      // The edge's label (e.g. calls per second) at its middle, above the line.
      return [line, s('text', { class: 'edge-label', x: ((x1 + NW + x2) / 2).toFixed(1), y: ((y1 + y2 + NH) / 2 - 4).toFixed(1), 'text-anchor': 'middle' }, label)];
    }),
    nodes.map((n, i) => s('g', { class: `node ${n.kind || ''}` },
      s('rect', { x: pos[i][0], y: pos[i][1], width: NW, height: NH, rx: 4 }),
      s('text', { x: pos[i][0] + 8, y: pos[i][1] + 19 }, n.label.length > 20 ? `${n.label.slice(0, 19)}…` : n.label))));
  const list = h('ul', { class: 'sr-only' }, edges.map(([a, b, label]) => h('li', {}, `${a} ${verb || 'depends on'} ${b}${label ? ` (${label})` : ''}`)));
  return h('figure', { class: 'graph-block' }, svg, list);
}

/** Accessible tabs: [{id, label, render(panel)}]; returns the element; `selected` picks the first shown. */
export function tabs(list, selected, onSelect) {
  const bar = h('div', { class: 'tabs', role: 'tablist' });
  const panel = h('div', { role: 'tabpanel', tabindex: '0' });
  const buttons = list.map((t) => h('button', {
    type: 'button', role: 'tab', id: `tab-${t.id}`, 'aria-controls': 'tabpanel',
    onclick: () => show(t.id),
    onkeydown: (e) => {
      const i = list.findIndex((x) => x.id === t.id);
      if (e.key === 'ArrowRight') { show(list[(i + 1) % list.length].id); buttons[(i + 1) % list.length].focus(); }
      if (e.key === 'ArrowLeft') { show(list[(i + list.length - 1) % list.length].id); buttons[(i + list.length - 1) % list.length].focus(); }
    },
  }, t.label));
  panel.id = 'tabpanel';
  bar.append(...buttons);
  function show(id) {
    const t = list.find((x) => x.id === id) || list[0];
    buttons.forEach((b, i) => { b.setAttribute('aria-selected', String(list[i].id === t.id)); b.tabIndex = list[i].id === t.id ? 0 : -1; });
    panel.setAttribute('aria-labelledby', `tab-${t.id}`);
    clear(panel);
    if (onSelect) onSelect(t.id);
    Promise.resolve(t.render(panel)).catch((e) => panel.append(errorBox(e)));
  }
  const el = h('div', {}, bar, panel);
  show(selected || list[0].id);
  return el;
}

/** A labelled form field; returns {el, input, error(msg)}. */
export function field(label, input, hint) {
  const id = input.id || `in-${Math.random().toString(36).slice(2, 8)}`;
  input.id = id;
  const err = h('div', { class: 'field-error', id: `${id}-err`, role: 'alert' });
  input.setAttribute('aria-describedby', `${id}-err`);
  const el = h('div', { class: 'field' }, h('label', { for: id }, label), input, hint ? h('span', { class: 'hint' }, hint) : null, err);
  return {
    el, input,
    error(msg) { err.textContent = msg || ''; input.setAttribute('aria-invalid', msg ? 'true' : 'false'); },
  };
}

export function select(options, value, attrs) {
  return h('select', attrs || {}, options.map((o) => {
    const [v, label] = Array.isArray(o) ? o : [o, o];
    return h('option', { value: v, selected: v === value }, label);
  }));
}

export function when(ms) { return ms ? new Date(ms).toLocaleString() : ''; }

/** Reads the `#/page?k=v` route. */
export function route() {
  const raw = location.hash.replace(/^#\/?/, '');
  const [page, qs] = raw.split('?');
  return { page: page || '', params: Object.fromEntries(new URLSearchParams(qs || '')) };
}
export function link(page, params) {
  const qs = new URLSearchParams(params || {}).toString();
  return `#/${page}${qs ? `?${qs}` : ''}`;
}
