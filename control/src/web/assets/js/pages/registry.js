// The service registry: the services of an environment (filtered by cluster) with health counts, live
// state and protection; a service's detail in tabs — instances (health, weight, version, tags, metadata,
// drain state, lease) with offline/online, weight and deregister; the catalogue (owner, docs,
// dependencies, lease, protection threshold, active check, review) with the publishing gate; the
// governance rules, their review and versions; call statistics and token budgets (../governance.js).
// Levels are the API's: the page draws only the actions the user's level on the service allows
// (deregister: edit; the rest: publish), and shows the API's refusal where it happened.
import * as api from '../api.js';
import { h, table, field, select, link, stateBadge, badge, confirmDialog, errorBox, toast, clear, graphView, tabs } from '../ui.js';
import { rulesTab, historyTab, callsTab, utc } from '../governance.js';

const LEVELS = ['none', 'masked_read', 'read', 'edit', 'publish'];
const atLeast = (level, want) => LEVELS.indexOf(level) >= LEVELS.indexOf(want);
const kv = (m) => Object.entries(m || {}).map(([k, v]) => `${k}=${v}`).join(', ');
const clusterOf = (i) => (i.tags && i.tags.cluster) || '';

function protection(s) {
  const t = s.service.protect_threshold;
  if (!t) return badge('off', '');
  return s.protected ? badge(`in effect (< ${t})`, 'bad') : badge(`armed (${t})`, 'ok');
}

async function listView(view, env, params) {
  const all = await api.get(`/v1/registry/${api.seg(env)}/services`);
  const clusters = [...new Set(all.flatMap((s) => s.clusters || []))].sort();
  const cluster = params.cluster;
  const clusterSel = select([['', 'all clusters'], ...clusters.map((c) => [c === '' ? '-' : c, c === '' ? '(no cluster tag)' : c])], cluster || '', { id: 'registry-cluster' });
  clusterSel.addEventListener('change', () => { location.hash = link('registry', { env, cluster: clusterSel.value }); });
  view.append(field('Cluster', clusterSel, 'an instance\'s cluster is its "cluster" tag').el);
  const want = cluster === '-' ? '' : cluster;
  const services = cluster ? all.filter((s) => (s.clusters || []).includes(want)) : all;
  view.append(table({
    id: 'services-table', caption: `Services in ${env}${cluster ? `, cluster ${cluster === '-' ? '(none)' : cluster}` : ''}`, rows: services, empty: 'No service registered.',
    columns: [
      { key: 'name', label: 'Service', value: (s) => s.service.name, render: (s) => h('a', { href: link('registry', { env, service: s.service.name }) }, s.service.name) },
      { key: 'app', label: 'Application', value: (s) => s.service.app },
      { key: 'owner', label: 'Owner', value: (s) => s.service.owner },
      { key: 'live', label: 'Live', value: (s) => (s.service.live ? 'live' : 'not live'), render: (s) => badge(s.service.live ? 'live' : 'not live', s.service.live ? 'ok' : 'warn') },
      { key: 'instances', label: 'Instances', num: true },
      { key: 'healthy', label: 'Healthy', num: true },
      { key: 'unhealthy', label: 'Unhealthy', num: true, value: (s) => s.instances - s.healthy },
      { key: 'enabled', label: 'Online', num: true },
      { key: 'protected', label: 'Protection', value: (s) => (s.service.protect_threshold ? (s.protected ? 'in effect' : 'armed') : 'off'), render: protection },
      { key: 'clusters', label: 'Clusters', value: (s) => (s.clusters || []).filter((c) => c).join(', ') },
    ],
  }));
  // The declared dependencies as a graph (a dependency that is not registered here is drawn dashed).
  const known = new Set(all.map((s) => s.service.name));
  const edges = services.flatMap((s) => (s.service.dependencies || []).map((d) => [s.service.name, d]));
  if (edges.length > 0) {
    const missing = [...new Set(edges.map((e) => e[1]).filter((d) => !known.has(d)))];
    view.append(h('h2', {}, 'Dependencies'), h('div', { id: 'deps-graph' }, graphView({
      title: `Declared dependencies in ${env}`,
      nodes: [...all.map((s) => ({ id: s.service.name, label: s.service.name })), ...missing.map((d) => ({ id: d, label: d, kind: 'missing' }))],
      edges,
    })));
  }
}

/** The lease as this node sees it: when it runs out, and the last beat or passed check that set it. */
function lease(i, s) {
  const at = s.leases[i.id];
  if (!at) return i.owner_node && i.owner_node !== s.node ? `held by ${i.owner_node}` : 'none on this node';
  const check = s.service.check;
  const span = check ? Math.max(s.service.ttl_ms, 2 * check.interval_ms) : s.service.ttl_ms;
  const left = Math.max(0, (at - Date.now()) / 1000);
  return `last ${check ? 'beat/check' : 'beat'} ${utc(at - span)} UTC, expires in ${left.toFixed(1)} s`;
}

function instancesTab(panel, s, svcPath, redraw) {
  const name = s.service.name;
  const canEdit = atLeast(s.level, 'edit'), canPublish = atLeast(s.level, 'publish');
  const fail = (e) => panel.prepend(errorBox(e));
  const act = async (i, what, text, label) => {
    if (!(await confirmDialog(text, label))) return;
    try {
      if (what === 'deregister') await api.del(`${svcPath}/instances/${api.seg(i.id)}`);
      else await api.post(`${svcPath}/instances/${api.seg(i.id)}/${what}`);
      toast(`${i.id}: ${what}`);
      redraw();
    } catch (e) { fail(e); }
  };
  const check = s.service.check;
  panel.append(h('p', { class: 'muted', id: 'svc-health-source' }, check
    ? `Active ${check.kind} check every ${check.interval_ms} ms (timeout ${check.timeout_ms} ms${check.path ? `, ${check.path}` : ''}${check.user ? `, as ${check.user}` : ''}); heartbeat lease ${s.service.ttl_ms} ms.`
    : `Heartbeats; lease ${s.service.ttl_ms} ms. Leases shown are those held by this node (${s.node}).`));
  if (s.protected) panel.append(h('p', { class: 'alert', role: 'alert', id: 'svc-protected' }, `Protection in effect: fewer than ${s.service.protect_threshold * 100} % of the online instances are healthy, so discovery returns all of them.`));
  const columns = [
    { key: 'id', label: 'Instance' }, { key: 'addr', label: 'Address', value: (i) => `${i.ip}:${i.port}` },
    { key: 'cluster', label: 'Cluster', value: clusterOf },
    { key: 'version', label: 'Version' }, { key: 'weight', label: 'Weight', num: true },
    { key: 'healthy', label: 'Health', value: (i) => (i.healthy ? 'healthy' : 'down'), render: (i) => stateBadge(i.healthy ? 'healthy' : 'down') },
    { key: 'enabled', label: 'Traffic', value: (i) => (i.enabled ? 'online' : 'offline (draining)'), render: (i) => badge(i.enabled ? 'online' : 'offline (draining)', i.enabled ? 'ok' : 'warn') },
    { key: 'tags', label: 'Tags', value: (i) => kv(i.tags) },
    { key: 'metadata', label: 'Metadata', value: (i) => kv(i.metadata) },
    { key: 'lease', label: 'Lease', value: (i) => lease(i, s) },
  ];
  if (canEdit) {
    columns.push({ key: 'actions', label: 'Actions', value: () => '', render: (i) => h('span', { class: 'row' },
      canPublish ? h('button', { type: 'button', 'data-action': i.enabled ? 'offline' : 'online', 'data-inst': i.id, 'aria-label': `${i.enabled ? 'Take offline' : 'Put online'} ${i.id}`,
        onclick: () => act(i, i.enabled ? 'offline' : 'online', i.enabled
          ? `Drain instance ${i.id} of ${name}? It stays registered and beating but gets no new traffic.`
          : `Put instance ${i.id} of ${name} online again?`, i.enabled ? 'Offline' : 'Online') }, i.enabled ? 'Offline' : 'Online') : null,
      canPublish ? h('button', { type: 'button', 'data-action': 'weight', 'data-inst': i.id, 'aria-label': `Change the weight of ${i.id}`,
        onclick: () => { pick.value = i.id; weight.value = String(i.weight); weight.focus(); } }, 'Weight…') : null,
      h('button', { type: 'button', 'data-action': 'deregister', 'data-inst': i.id, 'aria-label': `Deregister ${i.id}`,
        onclick: () => act(i, 'deregister', `Deregister instance ${i.id} of ${name}? ${i.enabled ? 'It is still online: drain it first.' : 'It is offline.'} A running instance registers again at its next heartbeat.`, 'Deregister') }, 'Deregister')) });
  }
  panel.append(table({ id: 'reg-instances-table', caption: `Instances of ${name}`, rows: s.instances, empty: 'No instance.', columns }));
  // The weight form (publish level): one instance at a time, behind the confirmation dialog.
  const pick = select(s.instances.map((i) => i.id), s.instances.length ? s.instances[0].id : '', { id: 'inst-weight-id' });
  const weight = h('input', { id: 'inst-weight', type: 'text', inputmode: 'numeric' });
  const fWeight = field('Weight (0–10,000; 0: no traffic)', weight);
  if (!canPublish || s.instances.length === 0) return;
  const form = h('form', { class: 'card row', id: 'weight-form', 'aria-label': 'Change an instance\'s weight' },
    field('Instance', pick).el, fWeight.el, h('button', { type: 'submit', id: 'inst-weight-apply' }, 'Apply…'));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    fWeight.error('');
    const w = Number(weight.value);
    if (weight.value === '' || !Number.isInteger(w) || w < 0) { fWeight.error('a whole number from 0 to 10000'); return; }
    const inst = s.instances.find((i) => i.id === pick.value);
    if (!(await confirmDialog(`Change the weight of ${pick.value} from ${inst ? inst.weight : '?'} to ${w}?`, 'Apply'))) return;
    try {
      await api.put(`${svcPath}/instances/${api.seg(pick.value)}/weight`, { weight: w });
      toast(`${pick.value}: weight ${w}`);
      redraw();
    } catch (ex) {
      if (ex.field === 'weight') fWeight.error(ex.message); else fail(ex);
    }
  });
  panel.append(form);
}

/** The catalogue and settings (`PUT SVC` replaces them all), and the publishing gate (`POST SVC/live`). */
function catalogueTab(panel, s, svcPath, redraw) {
  const svc = s.service;
  const canPublish = atLeast(s.level, 'publish');
  const input = (id, value, attrs) => { const i = h('input', { id, type: 'text', ...(attrs || {}), disabled: !canPublish }); i.value = value ?? ''; return i; };
  const f = {
    owner: field('Owner', input('svc-owner', svc.owner), 'a person or team; needed to go live'),
    docs: field('Documentation', input('svc-docs', svc.docs), 'a link; needed to go live'),
    dependencies: field('Dependencies', input('svc-deps', (svc.dependencies || []).join(', ')), 'service names, comma separated'),
    ttl_ms: field('Heartbeat lease (ms)', input('svc-ttl', svc.ttl_ms, { type: 'number' }), '1,000–3,600,000'),
    protect_threshold: field('Protection threshold', input('svc-protect', svc.protect_threshold, { type: 'number', step: 'any', min: '0', max: '1' }), '0–1; 0: off'),
  };
  const review = h('input', { id: 'svc-review', type: 'checkbox', checked: svc.review_rules, disabled: !canPublish });
  const ck = svc.check || {};
  const kind = select([['', 'none (heartbeats)'], 'tcp', 'http', 'redis', 'mysql'], ck.kind || '', { id: 'svc-check-kind', disabled: !canPublish });
  const c = {
    kind: field('Active check', kind),
    interval_ms: field('Interval (ms)', input('svc-check-interval', ck.interval_ms ?? 5000, { type: 'number' })),
    timeout_ms: field('Timeout (ms)', input('svc-check-timeout', ck.timeout_ms ?? 2000, { type: 'number' })),
    path: field('HTTP path', input('svc-check-path', ck.path || '')),
    user: field('MySQL user', input('svc-check-user', ck.user || '')),
  };
  const out = h('div', { id: 'svc-form-error' });
  const form = h('form', { class: 'card', id: 'svc-catalogue', 'aria-labelledby': 'cat-title' },
    h('h3', { id: 'cat-title' }, 'Catalogue and settings'),
    f.owner.el, f.docs.el, f.dependencies.el, f.ttl_ms.el, f.protect_threshold.el,
    h('div', { class: 'field' }, h('label', {}, review, ' Rule publishes need review by another user')),
    h('fieldset', {}, h('legend', {}, 'Active health check'), c.kind.el, c.interval_ms.el, c.timeout_ms.el, c.path.el, c.user.el,
      ck.user ? h('p', { class: 'muted' }, 'The stored password is kept (set it with furrow ctl).') : null),
    out);
  const showError = (ex) => {
    const [head, rest] = String(ex.field || '').split(/[./]/);
    const target = head === 'check' ? c[rest] || c.kind : f[head];
    if (target) target.error(ex.message); else out.append(errorBox(ex));
  };
  const reset = () => { Object.values(f).concat(Object.values(c)).forEach((x) => x.error('')); clear(out); };
  if (canPublish) {
    form.append(h('div', { class: 'row' },
      h('button', { type: 'submit', id: 'svc-save' }, 'Save…'),
      h('button', { type: 'button', id: 'svc-live', onclick: async () => {
        reset();
        const live = !svc.live;
        if (!(await confirmDialog(live
          ? `Make ${svc.name} live? Discovery and watches answer for it from now on.`
          : `Take ${svc.name} back to draft? Discovery and watches answer 404 for it until it is live again.`, live ? 'Go live' : 'Take off live'))) return;
        try { await api.post(`${svcPath}/live`, { live }); toast(`${svc.name}: ${live ? 'live' : 'not live'}`); redraw(); } catch (ex) { showError(ex); }
      } }, svc.live ? 'Take off live…' : 'Go live…')));
  }
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    reset();
    const body = {
      app: svc.app, owner: f.owner.input.value.trim(), docs: f.docs.input.value.trim(),
      dependencies: f.dependencies.input.value.split(',').map((x) => x.trim()).filter((x) => x),
      ttl_ms: Number(f.ttl_ms.input.value), protect_threshold: Number(f.protect_threshold.input.value || 0),
      review_rules: review.checked,
    };
    if (kind.value) {
      body.check = { kind: kind.value, interval_ms: Number(c.interval_ms.input.value), timeout_ms: Number(c.timeout_ms.input.value) };
      if (kind.value === 'http') body.check.path = c.path.input.value.trim();
      if (kind.value === 'mysql' && c.user.input.value.trim()) {
        body.check.user = c.user.input.value.trim();
        if (ck.user === body.check.user) body.check.password = '******';
      }
    }
    if (!(await confirmDialog(`Save the catalogue and settings of ${svc.name}?`, 'Save'))) return;
    try { await api.put(svcPath, body); toast(`${svc.name} saved`); redraw(); } catch (ex) { showError(ex); }
  });
  panel.append(form);
}

async function detailView(view, env, params) {
  const name = params.service;
  const svcPath = `/v1/registry/${api.seg(env)}/services/${api.seg(name)}`;
  view.append(h('p', {}, h('a', { href: link('registry', { env }) }, `← Services in ${env}`)));
  const detail = h('section', { 'aria-labelledby': 'svc-title', id: 'svc-detail' });
  view.append(detail);
  let tab = params.tab || 'instances';
  const draw = async () => {
    const [s, services] = await Promise.all([api.get(svcPath), api.get(`/v1/registry/${api.seg(env)}/services`)]);
    clear(detail);
    const svc = s.service;
    const healthy = s.instances.filter((i) => i.healthy).length;
    detail.append(h('h2', { id: 'svc-title' }, `${svc.name} (${svc.app})`),
      h('p', { class: 'row', id: 'svc-summary' },
        badge(svc.live ? 'live' : 'not live', svc.live ? 'ok' : 'warn'),
        h('span', {}, `${s.instances.length} instances, ${healthy} healthy, ${s.instances.filter((i) => i.enabled).length} online`),
        svc.protect_threshold ? h('span', {}, 'protection ', protection(s)) : null,
        h('span', {}, `owner ${svc.owner || '—'}`),
        svc.docs ? h('span', {}, 'docs ', /^https?:\/\//.test(svc.docs) ? h('a', { href: svc.docs, rel: 'noopener noreferrer' }, svc.docs) : svc.docs) : null,
        h('span', {}, `your level: ${s.level}`), h('span', {}, `revision ${svc.rev}`)));
    // This service's dependencies and the services that declare it as theirs.
    const deps = svc.dependencies || [];
    const dependents = services.filter((x) => (x.service.dependencies || []).includes(svc.name)).map((x) => x.service.name);
    const known = new Set(services.map((x) => x.service.name));
    if (deps.length || dependents.length) {
      const ids = [...new Set([svc.name, ...deps, ...dependents])];
      detail.append(h('div', { id: 'deps-graph' }, graphView({
        title: `Declared dependencies of ${svc.name}`,
        nodes: ids.map((d) => ({ id: d, label: d, kind: known.has(d) ? '' : 'missing' })),
        edges: [...deps.map((d) => [svc.name, d]), ...dependents.map((d) => [d, svc.name])],
      })));
    }
    const redraw = () => draw().catch((e) => detail.append(errorBox(e)));
    detail.append(h('p', {}, h('button', { type: 'button', id: 'svc-refresh', onclick: redraw }, 'Refresh')));
    // The URL follows the user's choice of tab, not a redraw's: a redraw that ends after the user moved
    // on must not rewrite the address they went to.
    let drawing = true;
    detail.append(tabs([
      { id: 'instances', label: 'Instances', render: (p) => instancesTab(p, s, svcPath, redraw) },
      { id: 'catalogue', label: 'Catalogue', render: (p) => catalogueTab(p, s, svcPath, redraw) },
      { id: 'rules', label: 'Rules', render: (p) => rulesTab(p, s, svcPath, redraw) },
      { id: 'history', label: 'Rule versions', render: (p) => historyTab(p, s, svcPath, redraw) },
      { id: 'calls', label: 'Calls and tokens', render: (p) => callsTab(p, s, svcPath) },
    ], tab, (id) => { tab = id; if (!drawing) history.replaceState(null, '', link('registry', { env, service: name, tab: id })); }));
    drawing = false;
  };
  await draw();
}

export const page = {
  id: 'registry',
  title: 'Registry',
  nav: true,
  async render(view, params) {
    const envs = await api.get('/v1/envs');
    const env = params.env || envs[0];
    view.append(h('h1', {}, params.service ? `Service ${params.service}` : 'Service registry'));
    const envSel = select(envs, env, { id: 'registry-env' });
    envSel.addEventListener('change', () => { location.hash = link('registry', { env: envSel.value }); });
    view.append(field('Environment', envSel).el);
    if (params.service) await detailView(view, env, params);
    else await listView(view, env, params);
  },
};
