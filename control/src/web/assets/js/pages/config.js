// Configuration: the apps/envs/clusters/namespaces tree, then one namespace instance with its draft items
// (editing with the API's validation errors shown at the field), inheritance (which layer each value comes
// from), draft diff and publish (every mode the API has), gray releases, scheduled publishes, rollouts,
// releases (diff, rollback) and the instances with the release each runs.
import * as api from '../api.js';
import { h, clear, table, diffView, errorBox, toast, confirmDialog, tabs, field, select, valueText, when, link, badge, stateBadge } from '../ui.js';

const TYPES = ['string', 'integer', 'float', 'boolean', 'list', 'document', 'rules'];
const FORMATS = ['toml', 'json', 'yaml', 'xml', 'properties'];

export const page = {
  id: 'config',
  title: 'Configuration',
  nav: true,
  async render(view, params) {
    const envs = await api.get('/v1/envs');
    const apps = await api.get('/v1/apps');
    const env = params.env || envs[0];
    const app = params.app || (apps[0] && apps[0].name);
    view.append(h('h1', {}, 'Configuration'));
    const tree = h('nav', { class: 'card tree', 'aria-label': 'Applications, clusters and namespaces' });
    const main = h('div', {});
    view.append(h('div', { class: 'grid' }, tree, main));
    const envSel = select(envs, env, { id: 'env-select' });
    envSel.addEventListener('change', () => { location.hash = link('config', { app: app || '', env: envSel.value }); });
    tree.append(field('Environment', envSel).el);
    const ul = h('ul', {});
    tree.append(ul);
    if (apps.length === 0) tree.append(h('p', { class: 'muted' }, 'No application yet (an administrator creates them: furrow ctl config create-app).'));
    for (const a of apps) {
      const li = h('li', {}, h('a', { href: link('config', { app: a.name, env }), 'aria-current': a.name === app ? 'true' : null }, a.name));
      ul.append(li);
      if (a.name !== app) continue;
      const [clusters, namespaces] = await Promise.all([
        api.get(`/v1/apps/${api.seg(app)}/envs/${api.seg(env)}/clusters`),
        api.get(`/v1/apps/${api.seg(app)}/namespaces`),
      ]);
      const cl = h('ul', {});
      li.append(cl);
      for (const c of clusters) {
        const nsList = h('ul', {});
        cl.append(h('li', {}, h('span', { class: 'muted' }, `cluster ${c}`), nsList));
        for (const n of namespaces) {
          const current = params.ns === n.name && (params.cluster || 'default') === c;
          const label = n.app !== app ? `${n.name} (public, from ${n.app})` : `${n.name}${n.public ? ' (public)' : ''}${n.review ? ' · review' : ''}`;
          nsList.append(h('li', {}, h('a', {
            href: link('config', { app, env, cluster: c, ns: n.name }),
            class: 'ns-link', 'data-ns': `${c}/${n.name}`, 'aria-current': current ? 'true' : null,
          }, label)));
        }
      }
    }
    if (!app || !params.ns) {
      main.append(h('p', { class: 'muted' }, 'Choose a namespace in the tree.'));
      return;
    }
    const ns = { app, env, cluster: params.cluster || 'default', ns: params.ns };
    main.append(h('h2', { id: 'ns-title' }, `${ns.app} / ${ns.env} / ${ns.cluster} / ${ns.ns}`));
    main.append(tabs([
      { id: 'items', label: 'Items (draft)', render: (p) => itemsTab(p, ns) },
      { id: 'layers', label: 'Inheritance', render: (p) => layersTab(p, ns) },
      { id: 'publish', label: 'Diff & publish', render: (p) => publishTab(p, ns) },
      { id: 'releases', label: 'Releases', render: (p) => releasesTab(p, ns) },
      { id: 'instances', label: 'Instances', render: (p) => instancesTab(p, ns) },
    ], params.tab, (id) => { history.replaceState(null, '', link('config', { ...ns, tab: id })); }));
  },
};

async function itemsTab(panel, ns) {
  const items = await api.get(`${api.nsPath(ns)}/items`);
  const editor = h('div', {});
  panel.append(h('div', { class: 'row' }, h('button', { type: 'button', class: 'primary', id: 'add-item', onclick: () => edit(editor, ns, null, () => refresh()) }, 'Add item')), editor);
  const holder = h('div', {});
  panel.append(holder);
  function draw(list) {
    clear(holder).append(table({
      id: 'items-table', caption: 'Draft items', rows: list,
      columns: [
        { key: 'key', label: 'Key', render: (r) => h('span', { class: 'mono' }, r.key) },
        { key: 'type', label: 'Type', value: (r) => r.value.type },
        { key: 'value', label: 'Value', value: (r) => valueText(r.value), render: (r) => h('span', { class: 'mono cell-text' }, valueText(r.value).slice(0, 300)) },
        { key: 'flags', label: 'Flags', value: (r) => `${r.secret ? 'secret ' : ''}${r.schema ? 'schema' : ''}` },
        { key: 'version', label: 'Version', num: true },
        { key: 'modified_by', label: 'By' },
        { key: 'actions', label: 'Actions', value: () => '', render: (r) => h('span', { class: 'row' },
          h('button', { type: 'button', 'aria-label': `Edit ${r.key}`, onclick: () => edit(editor, ns, r, () => refresh()) }, 'Edit'),
          h('button', { type: 'button', 'aria-label': `Delete ${r.key}`, onclick: async () => {
            if (!(await confirmDialog(`Delete ${r.key} from the draft of ${ns.ns}?`, 'Delete'))) return;
            try { await api.del(`${api.nsPath(ns)}/items/${api.seg(r.key)}?version=${r.version}`); toast(`Deleted ${r.key}`); refresh(); } catch (e) { holder.prepend(errorBox(e)); }
          } }, 'Delete')) },
      ],
    }));
  }
  async function refresh() { draw(await api.get(`${api.nsPath(ns)}/items`)); }
  draw(items);
}

/** The item editor; `item` null for a new one. Errors of the API are shown at the field they name. */
function edit(holder, ns, item, done) {
  clear(holder);
  const v = item ? item.value : { type: 'string', value: '' };
  const key = field('Key', h('input', { id: 'item-key', value: item ? item.key : '', disabled: !!item, required: true }));
  const type = field('Type', select(TYPES, v.type, { id: 'item-type' }));
  const format = field('Document format', select(FORMATS, v.type === 'document' ? v.value.format : 'toml', { id: 'item-format' }));
  const initial = v.type === 'document' ? v.value.text : v.type === 'string' ? v.value : JSON.stringify(v.value, null, 2);
  const value = field('Value', h('textarea', { id: 'item-value', spellcheck: 'false' }), 'Strings as typed; numbers, booleans, lists and rule tables as JSON.');
  value.input.value = item && item.masked ? '' : (initial ?? '');
  const schema = field('JSON Schema (optional)', h('textarea', { id: 'item-schema', spellcheck: 'false' }), 'Leave empty to keep the current schema; "null" removes it.');
  const comment = field('Comment', h('input', { id: 'item-comment', value: (item && item.comment) || '' }));
  const general = h('div', { id: 'item-error' });
  const syncFormat = () => { format.el.hidden = type.input.value !== 'document'; };
  type.input.addEventListener('change', syncFormat);
  syncFormat();
  const form = h('form', { class: 'card', id: 'item-form', 'aria-label': item ? `Edit ${item.key}` : 'New item' },
    h('h3', {}, item ? `Edit ${item.key}` : 'New item'), key.el, type.el, format.el, value.el, schema.el, comment.el, general,
    h('div', { class: 'row' }, h('button', { type: 'submit', class: 'primary', id: 'item-save' }, 'Save to draft'),
      h('button', { type: 'button', onclick: () => clear(holder) }, 'Cancel')));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    [key, value, schema].forEach((f) => f.error(''));
    clear(general);
    const t = type.input.value;
    const text = value.input.value;
    let val;
    if (t === 'string') val = text;
    else if (t === 'document') val = { format: format.input.value, text };
    else { try { val = JSON.parse(text); } catch (_) { val = text; } }
    const body = { value: { type: t, value: val } };
    if (comment.input.value) body.comment = comment.input.value;
    if (schema.input.value.trim()) {
      try { body.schema = JSON.parse(schema.input.value); } catch (err) { schema.error(`not JSON: ${err.message}`); return; }
    }
    if (item) body.version = item.version;
    const k = key.input.value.trim();
    try {
      await api.put(`${api.nsPath(ns)}/items/${api.seg(k)}`, body);
      toast(`Saved ${k} to the draft`);
      clear(holder);
      done();
    } catch (err) {
      const f = err.field || '';
      const msg = `${err.code}: ${err.message}`;
      if (f.startsWith('schema')) schema.error(msg);
      else if (f.startsWith('value') || (!f && ['bad_request', 'invalid_document', 'schema_violation', 'unsupported_format'].includes(err.code))) value.error(msg);
      else if (f === 'key' || f === 'name') key.error(msg);
      else general.append(errorBox(err));
    }
  });
  holder.append(form);
  (item ? value.input : key.input).focus();
}

async function layersTab(panel, ns) {
  const r = await api.get(`/console/api/layers/${api.seg(ns.app)}/${api.seg(ns.env)}/${api.seg(ns.cluster)}/${api.seg(ns.ns)}`);
  const name = (i) => { const l = r.layers[i]; return l ? `${l.app}/${l.cluster}` : '?'; };
  panel.append(h('p', { class: 'muted' }, 'Layers, lowest priority first: a later layer overrides the keys of an earlier one. What an instance on the main line sees (gray releases aside).'));
  panel.append(table({
    id: 'layers-table', caption: 'Layers', pageSize: 10, rows: r.layers.map((l, i) => ({ ...l, priority: i + 1 })),
    columns: [{ key: 'priority', label: 'Priority', num: true }, { key: 'app', label: 'Application' }, { key: 'cluster', label: 'Cluster' },
      { key: 'release', label: 'Release', num: true, value: (l) => l.release ?? 'never published' }],
  }));
  const rows = Object.entries(r.items).map(([k, v]) => ({ key: k, value: valueText(v.item.value), from: name(v.from), overrides: v.overrides.map(name).join(', ') }));
  panel.append(h('h3', {}, 'Resolved values'), table({
    id: 'resolved-table', caption: 'Resolved values and where they come from', rows,
    columns: [{ key: 'key', label: 'Key' }, { key: 'value', label: 'Value' }, { key: 'from', label: 'From layer' }, { key: 'overrides', label: 'Overrides' }],
  }));
}

async function publishTab(panel, ns) {
  const base = api.nsPath(ns);
  const diffBox = h('div', { id: 'draft-diff' });
  panel.append(h('h3', {}, 'Draft vs current release'), diffBox);
  const loadDiff = async () => { clear(diffBox); try { diffBox.append(diffView(await api.get(`${base}/diff`))); } catch (e) { diffBox.append(errorBox(e)); } };
  await loadDiff();
  const message = field('Message', h('input', { id: 'publish-message' }));
  const mode = field('Mode', select([['immediate', 'Immediate (push now)'], ['natural', 'Natural (next refresh)'], ['scheduled', 'Scheduled'], ['gray', 'Gray (selected instances)'], ['rolling', 'Auto-rolling gray']], 'immediate', { id: 'publish-mode' }));
  const at = field('At (local time)', h('input', { id: 'publish-at', type: 'datetime-local' }));
  const labels = field('Labels (k=v,k=v)', h('input', { id: 'publish-labels' }));
  const ips = field('IPs (comma separated)', h('input', { id: 'publish-ips' }));
  const insts = field('Instance ids (comma separated)', h('input', { id: 'publish-instances' }));
  const batch = field('Batch (N or N%)', h('input', { id: 'publish-batch', value: '1' }));
  const interval = field('Interval between batches (ms)', h('input', { id: 'publish-interval', type: 'number', value: '60000', min: '0' }));
  const maxErr = field('Stop above error rate (0–1, optional)', h('input', { id: 'publish-maxerr', type: 'number', step: '0.01', min: '0', max: '1' }));
  const groups = { scheduled: [at], gray: [labels, ips, insts], rolling: [batch, interval, maxErr] };
  const sync = () => { for (const [m, fs] of Object.entries(groups)) fs.forEach((f) => { f.el.hidden = mode.input.value !== m; }); };
  mode.input.addEventListener('change', sync);
  sync();
  const out = h('div', { id: 'publish-result' });
  const list = (s) => s.split(',').map((x) => x.trim()).filter(Boolean);
  const form = h('form', { class: 'card', id: 'publish-form', 'aria-label': 'Publish' }, h('h3', {}, 'Publish'), message.el, mode.el,
    at.el, labels.el, ips.el, insts.el, batch.el, interval.el, maxErr.el, out,
    h('button', { type: 'submit', class: 'primary', id: 'publish-submit' }, 'Publish…'));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    clear(out);
    const m = mode.input.value;
    const body = { message: message.input.value, mode: m };
    if (m === 'scheduled') body.at_ms = new Date(at.input.value).getTime() || 0;
    if (m === 'gray') {
      const lab = {};
      for (const p of list(labels.input.value)) { const [k, v] = p.split('='); lab[k] = v ?? ''; }
      body.rule = { labels: lab, ips: list(ips.input.value), instances: list(insts.input.value) };
    }
    if (m === 'rolling') {
      const b = batch.input.value.trim();
      body.batch = b.endsWith('%') ? { percent: Number(b.slice(0, -1)) } : { count: Number(b) };
      body.interval_ms = Number(interval.input.value);
      if (maxErr.input.value) body.health = { max_error_rate: Number(maxErr.input.value) };
    }
    if (!(await confirmDialog(`Publish the draft of ${ns.app}/${ns.env}/${ns.cluster}/${ns.ns} (${m})?`, 'Publish'))) return;
    try {
      const r = await api.post(`${base}/publish`, body);
      out.append(h('p', { role: 'status', id: 'publish-done' }, r.release ? `Published release ${r.release}.` : `Scheduled (${r.scheduled}).`));
      toast('Published');
      await loadDiff();
      await extras();
    } catch (err) { out.append(errorBox(err)); }
  });
  panel.append(form);
  const extra = h('div', {});
  panel.append(extra);
  async function extras() {
    clear(extra);
    const [grays, scheduled, rollouts] = await Promise.all([
      api.get(`${base}/grays`).catch(() => []), api.get(`${base}/scheduled`).catch(() => []), api.get(`${base}/rollouts`).catch(() => []),
    ]);
    extra.append(h('h3', {}, 'Gray releases'), table({ id: 'grays-table', rows: grays, pageSize: 10, empty: 'No active gray release.', columns: [
      { key: 'release', label: 'Release', num: true }, { key: 'rule', label: 'Rule', value: (g) => JSON.stringify(g.rule) },
      { key: 'a', label: 'Actions', value: () => '', render: (g) => h('span', { class: 'row' },
        h('button', { type: 'button', onclick: () => grayAction(g.release, 'promote') }, 'Promote'),
        h('button', { type: 'button', onclick: () => grayAction(g.release, 'abandon') }, 'Abandon')) }] }));
    extra.append(h('h3', {}, 'Scheduled publishes'), table({ id: 'scheduled-table', rows: scheduled, pageSize: 10, empty: 'Nothing scheduled.', columns: [
      { key: 'id', label: 'Id', num: true }, { key: 'at_ms', label: 'At', value: (s) => when(s.at_ms) }, { key: 'message', label: 'Message' },
      { key: 'a', label: 'Actions', value: () => '', render: (s) => h('button', { type: 'button', onclick: async () => {
        if (!(await confirmDialog(`Cancel scheduled publish ${s.id}?`, 'Cancel publish'))) return;
        try { await api.del(`${base}/scheduled/${s.id}`); extras(); } catch (e) { extra.prepend(errorBox(e)); }
      } }, 'Cancel') }] }));
    extra.append(h('h3', {}, 'Rollouts'), table({ id: 'rollouts-table', rows: rollouts, pageSize: 10, empty: 'No rollout.', columns: [
      { key: 'id', label: 'Id', num: true }, { key: 'status', label: 'Status', render: (r) => stateBadge(r.status) }, { key: 'release', label: 'Release', num: true },
      { key: 'selected', label: 'Selected', value: (r) => (r.selected || []).join(', ') }, { key: 'reason', label: 'Reason' },
      { key: 'a', label: 'Actions', value: () => '', render: (r) => h('span', { class: 'row' }, ['pause', 'resume', 'abort', 'rollback'].map((a) => h('button', { type: 'button', onclick: async () => {
        if (!(await confirmDialog(`${a} rollout ${r.id}?`, a))) return;
        try { await api.post(`${base}/rollouts/${r.id}/${a}`); extras(); } catch (e) { extra.prepend(errorBox(e)); }
      } }, a))) }] }));
  }
  async function grayAction(id, what) {
    if (!(await confirmDialog(`${what} gray release ${id}?`, what))) return;
    try { await api.post(`${base}/grays/${id}/${what}`, { message: `${what} from the console` }); toast(`${what}d`); extras(); } catch (e) { extra.prepend(errorBox(e)); }
  }
  await extras();
}

async function releasesTab(panel, ns) {
  const base = api.nsPath(ns);
  const r = await api.get(`${base}/releases`);
  const detail = h('div', { id: 'release-detail' });
  const rels = r.releases;
  panel.append(table({
    id: 'releases-table', caption: 'Releases, newest first', rows: rels, columns: [
      { key: 'id', label: 'Release', num: true, render: (x) => h('span', {}, String(x.id), x.id === r.current ? badge('current', 'ok') : null) },
      { key: 'kind', label: 'Kind' }, { key: 'author', label: 'Author' }, { key: 'message', label: 'Message' },
      { key: 'created_ms', label: 'When', value: (x) => when(x.created_ms) }, { key: 'keys', label: 'Keys', num: true },
      { key: 'a', label: 'Actions', value: () => '', render: (x) => h('span', { class: 'row' },
        h('button', { type: 'button', 'aria-label': `Diff release ${x.id} with the one before`, onclick: () => showDiff(x) }, 'Diff'),
        x.id !== r.current && x.kind !== 'gray' ? h('button', { type: 'button', 'aria-label': `Roll back to release ${x.id}`, onclick: () => rollback(x) }, 'Roll back') : null) },
    ],
  }), detail);
  async function showDiff(x) {
    clear(detail);
    const i = rels.findIndex((y) => y.id === x.id);
    const prev = rels.slice(i + 1).find((y) => y.kind !== 'gray');
    detail.append(h('h3', {}, prev ? `Release ${prev.id} → ${x.id}` : `Release ${x.id} (first)`));
    try {
      if (prev) detail.append(diffView(await api.get(`/v1/diff${api.q({ from: prev.id, to: x.id })}`)));
      else { const rel = await api.get(`/v1/releases/${x.id}`); detail.append(diffView({ added: rel.items || {} })); }
    } catch (e) { detail.append(errorBox(e)); }
  }
  async function rollback(x) {
    if (!(await confirmDialog(`Roll ${ns.ns} back to release ${x.id}? A new release with its items is published and the draft reset.`, 'Roll back'))) return;
    try { const res = await api.post(`${base}/rollback`, { release: x.id, message: `rollback to ${x.id} from the console` }); toast(`Rolled back: release ${res.release}`); clear(panel); await releasesTab(panel, ns); } catch (e) { detail.prepend(errorBox(e)); }
  }
}

async function instancesTab(panel, ns) {
  const list = await api.get(`${api.nsPath(ns)}/instances`);
  panel.append(table({
    id: 'instances-table', caption: 'Instances that reported on this namespace instance', rows: list, empty: 'No instance has reported.', columns: [
      { key: 'id', label: 'Instance', value: (r) => r.id }, { key: 'ip', label: 'IP', value: (r) => r.ip },
      { key: 'labels', label: 'Labels', value: (r) => Object.entries(r.labels || {}).map(([k, v]) => `${k}=${v}`).join(', ') },
      { key: 'releases', label: 'Releases', value: (r) => (r.releases || []).join(', ') }, { key: 'version', label: 'Version', num: true },
      { key: 'status', label: 'Status', render: (r) => h('span', {}, stateBadge(r.status || 'applied'), r.reason ? ` ${r.reason}` : '') },
      { key: 'at_ms', label: 'Last report', value: (r) => when(r.at_ms) },
    ],
  }));
}
