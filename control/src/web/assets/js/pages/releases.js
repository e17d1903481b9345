// Release management (docs/release.md): pipelines (projects with the version each stage runs), deployments in
// progress with their batches, hosts, approvals and canary verdict, the operator's actions (approve, pause,
// resume, abort) behind the confirmation dialog, deploy / roll back / restart a stage, versions with their
// build gate and its logs, and the history of finished deployments; the project editor (every field of
// `PUT /v1/release/projects/NAME`) and new versions. Levels are the API's: read to see,
// edit to deploy, publish to roll back, restart and operate, the stage's approvers to approve.
import * as api from '../api.js';
import { h, table, field, select, link, badge, confirmDialog, errorBox, toast, clear } from '../ui.js';

const when = (ms) => (ms ? new Date(ms).toISOString().replace('T', ' ').replace(/\.\d+Z$/, '') : '');
const KIND = {
  succeeded: 'ok', running: 'warn', pausing: 'warn', analysing: 'warn', awaiting_approval: 'warn',
  awaiting_window: 'warn', waiting: 'warn', paused: 'warn', rolling_back: 'bad', failed: 'bad',
  rolled_back: 'bad', cancelled: 'bad', passed: 'ok', done: 'ok', working: 'warn', assigned: 'warn',
  pending: '', none: '',
};
const FINISHED = new Set(['succeeded', 'failed', 'rolled_back', 'cancelled']);
const stateBadge = (s) => badge(String(s).replaceAll('_', ' '), KIND[s]);
const depLink = (d) => h('a', { href: link('releases', { deployment: String(d.id) }) }, `#${d.id}`);

function deploymentsTable(id, caption, rows, empty) {
  return table({
    id, caption, rows, empty,
    columns: [
      { key: 'id', label: 'Deployment', num: true, render: depLink },
      { key: 'project', label: 'Project', render: (d) => h('a', { href: link('releases', { project: d.project }) }, d.project) },
      { key: 'stage', label: 'Stage' },
      { key: 'version', label: 'Version' },
      { key: 'previous', label: 'Previous', value: (d) => d.previous || '' },
      { key: 'kind', label: 'Kind' },
      { key: 'state', label: 'State', render: (d) => stateBadge(d.state) },
      { key: 'by', label: 'By' },
      { key: 'created_ms', label: 'Started (UTC)', value: (d) => when(d.created_ms) },
      { key: 'updated_ms', label: 'Last change (UTC)', value: (d) => when(d.updated_ms) },
    ],
  });
}

const lines = (t) => t.split('\n').map((x) => x.trim()).filter(Boolean);
const list = (t) => t.split(',').map((x) => x.trim()).filter(Boolean);
const num = (t) => (t.trim() === '' ? undefined : Number(t));

// The project editor: every field `PUT /v1/release/projects/NAME` takes (ProjectInput). Simple fields are
// inputs; the stages — hosts, approvals, windows, batches, canary — are JSON (the API's field-precise errors,
// e.g. `stages/0/window/allow/0`, are shown where they happened); empty keeps the default pipeline (new
// project) or the stages as they are (existing one). Saving asks first: defining a project needs publish.
async function projectEditor(view, existing) {
  const apps = await api.get('/v1/apps');
  const p = existing || { name: '', app: apps[0] ? apps[0].name : '', kind: 'service', depends_on: [], repo: '', gate: { commands: [] }, hooks: {}, probe: null, stages: null, webhooks: [] };
  const routing = p.kind && p.kind.routing ? p.kind.routing : null;
  const form = h('form', { id: 'project-form', class: 'card' });
  const inp = (id, value, attrs) => h('input', { id, value: value ?? '', autocomplete: 'off', ...(attrs || {}) });
  const area = (id, value, rows) => h('textarea', { id, rows: String(rows || 3), spellcheck: 'false' }, value ?? '');
  const f = {
    name: field('Name', inp('project-name', p.name, { required: true, readonly: existing ? true : null })),
    app: field('Application', select(apps.map((a) => a.name), p.app, { id: 'project-app' })),
    kind: field('Kind', select([['service', 'service (hosts with furrow agent)'], ['routing', "routing (Furrow's own rules)"]], routing ? 'routing' : 'service', { id: 'project-kind' })),
    routing_app: field('Routing: application', inp('project-routing-app', routing ? routing.app : '')),
    routing_cluster: field('Routing: cluster', inp('project-routing-cluster', routing ? routing.cluster : 'default')),
    routing_namespace: field('Routing: namespace', inp('project-routing-namespace', routing ? routing.namespace : '')),
    routing_labels: field('Routing: canary labels', inp('project-routing-labels', routing ? Object.entries(routing.canary_labels || {}).map(([k, v]) => `${k}=${v}`).join(', ') : ''), 'KEY=VALUE, comma-separated'),
    depends_on: field('Depends on', inp('project-depends', (p.depends_on || []).join(', ')), 'projects deployed first, comma-separated'),
    repo: field('Repository', inp('project-repo', p.repo), 'a git repository path: the gate runs there, the code diff reads it'),
    gate: field('Gate commands', area('project-gate', (p.gate.commands || []).join('\n')), 'one shell command per line (tests, lint)'),
    gate_timeout: field('Gate timeout per command (ms)', inp('project-gate-timeout', p.gate.timeout_ms, { type: 'number', min: '1' })),
    stop: field('Hook: stop', area('project-hook-stop', p.hooks.stop, 2)),
    install: field('Hook: install', area('project-hook-install', p.hooks.install, 2)),
    start: field('Hook: start', area('project-hook-start', p.hooks.start, 2)),
    health: field('Hook: health', area('project-hook-health', p.hooks.health, 2)),
    health_timeout: field('Health timeout (ms)', inp('project-health-timeout', p.hooks.health_timeout_ms, { type: 'number', min: '1' })),
    probe: field('Canary probe URL', inp('project-probe', p.probe ? p.probe.url : '', { placeholder: 'http://127.0.0.1:${PORT}/' }), '${VAR} is the agent\'s --var'),
    probe_interval: field('Probe interval (ms)', inp('project-probe-interval', p.probe ? p.probe.interval_ms : '', { type: 'number', min: '1' })),
    webhooks: field('Webhooks', area('project-webhooks', (p.webhooks || []).join('\n'), 2), 'one http://HOST:PORT/PATH per line'),
    stages: field('Stages (JSON)', area('project-stages', p.stages ? JSON.stringify(p.stages, null, 2) : '', 12),
      existing ? 'the pipeline in order; empty keeps it as it is' : 'empty: dev, qa, staging, live on no host; e.g. [{"name": "live", "hosts": ["h1", "h2"], "batches": [{"count": 1}, "rest"], "canary": {}}]'),
  };
  const routingBox = h('fieldset', { id: 'project-routing' }, h('legend', {}, 'Routing target'), f.routing_app.el, f.routing_cluster.el, f.routing_namespace.el, f.routing_labels.el);
  const showRouting = () => { routingBox.hidden = f.kind.input.value !== 'routing'; };
  f.kind.input.addEventListener('change', showRouting);
  showRouting();
  const err = h('div', { id: 'project-error' });
  form.append(h('h3', {}, existing ? `Edit project ${p.name}` : 'Define a project'),
    h('div', { class: 'row' }, f.name.el, f.app.el, f.kind.el), routingBox,
    h('div', { class: 'row' }, f.depends_on.el, f.repo.el),
    f.gate.el, f.gate_timeout.el,
    h('fieldset', {}, h('legend', {}, 'Agent hooks (sh -c, in the project directory on each host)'), f.stop.el, f.install.el, f.start.el, f.health.el, f.health_timeout.el),
    h('div', { class: 'row' }, f.probe.el, f.probe_interval.el), f.webhooks.el, f.stages.el,
    h('button', { type: 'submit', class: 'primary', id: 'project-submit' }, existing ? 'Save project…' : 'Create project…'), err);
  // The API's field paths → the form's fields (the deepest known prefix).
  const fieldOf = (path) => {
    const top = String(path || '').split('/');
    const map = { name: 'name', project: 'name', app: 'app', kind: 'kind', depends_on: 'depends_on', repo: 'repo', gate: 'gate', probe: 'probe', webhooks: 'webhooks', stages: 'stages' };
    if (top[0] === 'hooks') return f[top[1] === 'health_timeout_ms' ? 'health_timeout' : top[1]] || f.stop;
    if (top[0] === 'gate' && top[1] === 'timeout_ms') return f.gate_timeout;
    if (top[0] === 'probe' && top[1] === 'interval_ms') return f.probe_interval;
    if (top[0] === 'kind') return f.routing_namespace;
    return f[map[top[0]]] || null;
  };
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    clear(err);
    Object.values(f).forEach((x) => x.error(''));
    const name = f.name.input.value.trim();
    const body = {
      app: f.app.input.value,
      depends_on: list(f.depends_on.input.value),
      repo: f.repo.input.value.trim(),
      gate: { commands: lines(f.gate.input.value) },
      hooks: { stop: f.stop.input.value.trim(), install: f.install.input.value.trim(), start: f.start.input.value.trim(), health: f.health.input.value.trim() },
      webhooks: lines(f.webhooks.input.value),
    };
    if (f.kind.input.value === 'routing') {
      const labels = {};
      for (const kv of list(f.routing_labels.input.value)) {
        const [k, ...v] = kv.split('=');
        if (!k || !v.length) { f.routing_labels.error(`"${kv}" is not KEY=VALUE`); return; }
        labels[k.trim()] = v.join('=').trim();
      }
      body.kind = { routing: { app: f.routing_app.input.value.trim(), cluster: f.routing_cluster.input.value.trim() || 'default', namespace: f.routing_namespace.input.value.trim(), canary_labels: labels } };
    } else body.kind = 'service';
    const gt = num(f.gate_timeout.input.value);
    if (gt !== undefined) body.gate.timeout_ms = gt;
    const ht = num(f.health_timeout.input.value);
    if (ht !== undefined) body.hooks.health_timeout_ms = ht;
    if (f.probe.input.value.trim()) {
      body.probe = { url: f.probe.input.value.trim() };
      const pi = num(f.probe_interval.input.value);
      if (pi !== undefined) body.probe.interval_ms = pi;
    }
    const st = f.stages.input.value.trim();
    if (st) {
      try { body.stages = JSON.parse(st); } catch (ex) { f.stages.error(`not JSON: ${ex.message}`); return; }
    }
    if (!name) { f.name.error('a project name'); return; }
    if (!(await confirmDialog(`${existing ? 'Save' : 'Create'} project ${name} in ${body.app}?`, existing ? 'Save' : 'Create'))) return;
    try {
      await api.put(`/v1/release/projects/${api.seg(name)}`, body);
      toast(`project ${name} saved`);
      location.hash = link('releases', { project: name, t: String(Date.now()) });
    } catch (ex) {
      const target = fieldOf(ex.field);
      if (target) target.error(`${ex.message}${ex.field ? ` (${ex.field})` : ''}`);
      err.append(errorBox(ex));
    }
  });
  view.append(form);
}

// A new version: name, artifact (inline content or a file under the control host's --artifact-root) and
// source revision (`POST P/versions`, edit on the project). Versions are immutable once created (their gate
// run belongs to them); the gate can be run from the version's card.
function versionForm(name) {
  const form = h('form', { id: 'version-form', class: 'card' });
  const vname = h('input', { id: 'version-name', required: true, autocomplete: 'off' });
  const kind = select([['inline', 'inline content'], ['file', 'file on the control host']], 'inline', { id: 'version-artifact-kind' });
  const inline = h('textarea', { id: 'version-inline', rows: '6', spellcheck: 'false' });
  const file = h('input', { id: 'version-file', autocomplete: 'off', placeholder: '/srv/artifacts/web-1.4.0.tar' });
  const rev = h('input', { id: 'version-revision', autocomplete: 'off', placeholder: '3f2c1e0' });
  const fName = field('Version', vname);
  const fInline = field('Content', inline, 'a script or a config bundle, at most 256 KiB');
  const fFile = field('File', file, 'an absolute path under furrow control --artifact-root');
  const fRev = field('Revision', rev, 'git commit or ref (for the gate and the diff)');
  const gate = h('input', { id: 'version-run-gate', type: 'checkbox', checked: true });
  const showKind = () => { fInline.el.hidden = kind.value !== 'inline'; fFile.el.hidden = kind.value !== 'file'; };
  kind.addEventListener('change', showKind);
  showKind();
  const err = h('div', { id: 'version-error' });
  form.append(h('h3', {}, 'Add a version'), h('div', { class: 'row' }, fName.el, field('Artifact', kind).el, fRev.el), fInline.el, fFile.el,
    h('div', { class: 'row' }, gate, h('label', { for: 'version-run-gate' }, 'Run the build gate once created')),
    h('button', { type: 'submit', class: 'primary', id: 'version-submit' }, 'Add version…'), err);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    clear(err);
    [fName, fInline, fFile, fRev].forEach((x) => x.error(''));
    const body = { name: vname.value.trim(), artifact: kind.value === 'inline' ? { inline: inline.value } : { file: file.value.trim() }, revision: rev.value.trim() };
    if (!(await confirmDialog(`Add version ${body.name} to ${name}${gate.checked ? ' and run its gate' : ''}?`, 'Add version'))) return;
    try {
      await api.post(`/v1/release/projects/${api.seg(name)}/versions`, body);
      if (gate.checked) await api.post(`/v1/release/projects/${api.seg(name)}/versions/${api.seg(body.name)}/gate`);
      toast(`version ${body.name} added`);
      location.hash = link('releases', { project: name, version: body.name, t: String(Date.now()) });
    } catch (ex) {
      const target = { name: fName, version: fName, artifact: kind.value === 'inline' ? fInline : fFile, revision: fRev }[String(ex.field || '').split('/')[0]];
      if (target) target.error(ex.message);
      err.append(errorBox(ex));
    }
  });
  return form;
}

async function overview(view, params) {
  const projects = await api.get('/v1/release/projects');
  view.append(h('p', {}, h('a', { href: link('releases', { edit: 'new' }), id: 'project-new' }, 'Define a project…')));
  if (params.edit === 'new') await projectEditor(view, null);
  const stageNames = [...new Set(projects.flatMap((p) => p.project.stages.map((s) => s.name)))];
  view.append(h('h2', {}, 'Pipelines'));
  view.append(table({
    id: 'pipelines-table', caption: 'Projects and the version each stage runs', rows: projects, empty: 'No project.',
    columns: [
      { key: 'name', label: 'Project', value: (p) => p.project.name, render: (p) => h('a', { href: link('releases', { project: p.project.name }) }, p.project.name) },
      { key: 'app', label: 'Application', value: (p) => p.project.app },
      ...stageNames.map((s) => ({
        key: `stage-${s}`, label: s,
        value: (p) => (s in p.stages ? (p.stages[s] || '—') : ''),
      })),
    ],
  }));
  const active = await api.get('/v1/release/deployments?active=true&limit=200');
  view.append(h('h2', {}, 'In progress'), deploymentsTable('active-table', 'Deployments not finished', active, 'Nothing in progress.'));
  const all = await api.get('/v1/release/deployments?limit=200');
  const done = all.filter((d) => FINISHED.has(d.state));
  view.append(h('h2', {}, 'History'), deploymentsTable('history-table', 'Finished deployments, newest first (last 200)', done, 'No finished deployment.'));
}

async function project(view, name, params) {
  const p = await api.get(`/v1/release/projects/${api.seg(name)}`);
  const versions = (await api.get(`/v1/release/projects/${api.seg(name)}/versions`)).slice().reverse();
  view.append(h('h2', { id: 'project-title' }, `${p.project.name} (${p.project.app})`));
  view.append(h('p', { class: 'row' }, h('a', { href: link('releases', { project: name, edit: '1' }), id: 'project-edit' }, 'Edit project…'),
    h('a', { href: link('releases', { project: name, add: 'version' }), id: 'version-new' }, 'Add a version…')));
  if (params.edit) await projectEditor(view, p.project);
  if (params.add === 'version') view.append(versionForm(name));
  if ((p.project.depends_on || []).length) view.append(h('p', { class: 'muted' }, `Deployed after: ${p.project.depends_on.join(', ')}`));
  const spec = Object.fromEntries(p.project.stages.map((s) => [s.name, s]));
  view.append(table({
    id: 'stages-table', caption: 'Stages (the pipeline, in order)', rows: p.stages, pageSize: 50,
    columns: [
      { key: 'stage', label: 'Stage' },
      { key: 'version', label: 'Runs', value: (s) => (s.state ? s.state.version : '—') },
      { key: 'active', label: 'Active deployment', value: (s) => s.active ?? '', render: (s) => (s.active ? depLink({ id: s.active }) : '') },
      { key: 'hosts', label: 'Hosts', value: (s) => (spec[s.stage].hosts || []).join(', ') },
      { key: 'approval', label: 'Approval', value: (s) => { const a = spec[s.stage].approval; return a && a.count ? `${a.count} of ${a.approvers.join(', ')}` : ''; } },
      { key: 'canary', label: 'Canary', value: (s) => (spec[s.stage].canary ? 'yes' : '') },
      { key: 'history', label: 'Earlier versions', value: (s) => (s.state ? (s.state.history || []).join(', ') : '') },
    ],
  }));

  // Deploy, roll back or restart a stage (the API checks the gate, promotion order and levels).
  const form = h('form', { id: 'deploy-form', class: 'card' });
  const stageSel = select(p.project.stages.map((s) => s.name), params.stage, { id: 'deploy-stage' });
  const kindSel = select([['deploy', 'deploy'], ['rollback', 'roll back to'], ['restart', 'restart']], 'deploy', { id: 'deploy-kind' });
  const verSel = select(versions.map((v) => [v.name, `${v.name} (gate ${v.gate.status})`]), params.version, { id: 'deploy-version' });
  const err = h('div', { id: 'deploy-error' });
  form.append(h('h3', {}, 'Deploy'), h('div', { class: 'row' },
    field('Stage', stageSel).el, field('Action', kindSel).el, field('Version', verSel).el,
    h('button', { type: 'submit', class: 'primary', id: 'deploy-submit' }, 'Start…')), err);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    clear(err);
    const kind = kindSel.value;
    const what = kind === 'restart' ? `Restart ${name} on ${stageSel.value}?` : `${kind === 'rollback' ? 'Roll back' : 'Deploy'} ${name} ${verSel.value} on ${stageSel.value}?`;
    if (!(await confirmDialog(what, kind === 'deploy' ? 'Deploy' : kind === 'rollback' ? 'Roll back' : 'Restart'))) return;
    try {
      const body = kind === 'restart' ? { kind } : { version: verSel.value, kind };
      const d = await api.post(`/v1/release/projects/${api.seg(name)}/stages/${api.seg(stageSel.value)}/deploy`, body);
      toast(`deployment #${d.id} started`);
      location.hash = link('releases', { deployment: String(d.id) });
    } catch (ex) { err.append(errorBox(ex)); }
  });
  view.append(form);

  view.append(h('h3', {}, 'Versions'));
  view.append(table({
    id: 'versions-table', caption: 'Versions, newest first', rows: versions, empty: 'No version.',
    columns: [
      { key: 'name', label: 'Version', render: (v) => h('a', { href: link('releases', { project: name, version: v.name }) }, v.name) },
      { key: 'revision', label: 'Revision' },
      { key: 'gate', label: 'Gate', value: (v) => v.gate.status, render: (v) => stateBadge(v.gate.status) },
      { key: 'artifact', label: 'Artifact', value: (v) => (v.artifact.file ? v.artifact.file : 'inline') },
      { key: 'created_by', label: 'By' },
      { key: 'created_ms', label: 'Created (UTC)', value: (v) => when(v.created_ms) },
    ],
  }));
  if (params.version) {
    const v = versions.find((x) => x.name === params.version);
    if (v) view.append(versionCard(name, v));
  }
  const deps = await api.get(`/v1/release/deployments?project=${api.seg(name)}&limit=100`);
  view.append(h('h3', {}, 'Deployments'), deploymentsTable('project-deployments', `Deployments of ${name}, newest first`, deps, 'No deployment yet.'));
}

function versionCard(name, v) {
  const box = h('section', { class: 'card', id: 'version-detail', 'aria-label': `Version ${v.name}` });
  box.append(h('h3', {}, `Version ${v.name}: gate `, stateBadge(v.gate.status)));
  box.append(h('p', { class: 'muted' }, `gate run by ${v.gate.by || '—'}${v.gate.runner ? ` on ${v.gate.runner}` : ''}, ${when(v.gate.started_ms)} → ${when(v.gate.finished_ms)}`));
  box.append(h('button', { type: 'button', id: 'gate-run', onclick: async () => {
    if (!(await confirmDialog(`Run the build gate of ${name} ${v.name}?`, 'Run gate'))) return;
    try { await api.post(`/v1/release/projects/${api.seg(name)}/versions/${api.seg(v.name)}/gate`); toast('gate started'); } catch (e) { box.append(errorBox(e)); }
  } }, 'Run gate'));
  for (const c of v.gate.commands || []) {
    box.append(h('h4', {}, `${c.command} — exit ${c.exit ?? 'killed'}, ${c.ms} ms${c.truncated ? ' (log truncated)' : ''}`), h('pre', { class: 'gate-log' }, c.log));
  }
  return box;
}

function verdictCard(d) {
  const box = h('section', { class: 'card', id: 'canary-verdict', 'aria-label': 'Canary analysis' });
  box.append(h('h3', {}, 'Canary analysis'));
  if (d.samples) {
    const sp = d.samples.spans;
    box.append(h('p', { id: 'canary-samples' }, `Samples so far: canary ${d.samples.canary} requests (${d.samples.canary_errors} errors), baseline ${d.samples.baseline} requests (${d.samples.baseline_errors} errors)` +
      (sp ? `; spans: canary ${sp.canary} (${sp.canary_errors} errors), baseline ${sp.baseline} (${sp.baseline_errors} errors)` : '')));
  }
  const v = d.canary;
  if (!v) { box.append(h('p', { class: 'muted' }, d.samples ? 'Judging…' : 'No verdict.')); return box; }
  box.append(h('p', {}, badge(v.pass ? 'pass' : 'fail', v.pass ? 'ok' : 'bad'), ' ', v.reason));
  const pct = (x) => `${(x * 100).toFixed(2)} %`;
  const groups = (id, caption, x) => table({
    id, caption, pageSize: 5,
    rows: [{ group: 'canary', ...x.canary }, { group: 'baseline', ...x.baseline }],
    columns: [
      { key: 'group', label: 'Group' }, { key: 'requests', label: 'Requests', num: true },
      { key: 'errors', label: 'Errors', num: true }, { key: 'error_rate', label: 'Error rate', num: true, value: (g) => g.error_rate, render: (g) => pct(g.error_rate) },
      { key: 'p50_us', label: 'Median latency (µs)', num: true },
      { key: 'p99_us', label: 'p99 latency (µs)', num: true, value: (g) => g.p99_us ?? 0 },
    ],
  });
  const stats = (x) => `errors: z = ${x.errors_z.toFixed(3)}, p = ${x.errors_p.toPrecision(3)}` +
    (x.latency_p !== null && x.latency_p !== undefined ? `; latency: U = ${x.latency_u}, p = ${x.latency_p.toPrecision(3)}` : '; latency not judged') +
    (x.tail_p !== null && x.tail_p !== undefined ? `; p99: p = ${x.tail_p.toPrecision(3)}` : '');
  box.append(groups('canary-table', 'Canary against baseline, same period', v));
  box.append(h('p', { class: 'muted' }, stats(v)));
  if (v.spans) {
    box.append(h('h4', {}, 'Spans from the hosts (the service\'s own traces)'), groups('canary-spans-table', 'Entry spans of the canary hosts against the baseline hosts', v.spans));
    box.append(h('p', { class: 'muted', id: 'canary-spans-stats' }, stats(v.spans)));
  }
  return box;
}

async function deployment(view, id, ctx) {
  const box = h('section', { id: 'deployment-detail', 'aria-live': 'polite' });
  view.append(box);
  const path = `/v1/release/deployments/${api.seg(id)}`;
  const act = (action, label, text, cls) => h('button', { type: 'button', id: `deployment-${action}`, class: cls, onclick: async () => {
    if (!(await confirmDialog(text, label))) return;
    try { await api.post(`${path}/${action}`); toast(`#${id}: ${label.toLowerCase()}`); await draw(); } catch (e) { box.prepend(errorBox(e)); }
  } }, label);
  let last = '';
  async function draw() {
    const d = await api.get(path);
    const sig = JSON.stringify(d);
    if (sig === last) return d;
    last = sig;
    clear(box);
    box.append(h('h2', { id: 'deployment-title' }, `Deployment #${d.id}: ${d.project} ${d.version} → ${d.stage} `, stateBadge(d.state)));
    box.append(h('p', { class: 'muted' }, `${d.kind}${d.previous ? ` (previous ${d.previous})` : ''} · started by ${d.by} ${when(d.created_ms)} UTC · approvals: ${d.approvals.length ? d.approvals.join(', ') : 'none'}${d.after.length ? ` · after #${d.after.join(', #')}` : ''}`));
    const actions = h('div', { class: 'row', id: 'deployment-actions' });
    if (!FINISHED.has(d.state)) {
      if (d.state === 'awaiting_approval') actions.append(act('approve', 'Approve', `Approve deploying ${d.project} ${d.version} to ${d.stage}?`, 'primary'));
      if (d.state === 'paused') actions.append(act('resume', 'Resume', `Resume deployment #${d.id}?`));
      else actions.append(act('pause', 'Pause', `Pause deployment #${d.id}? Hosts finish what they were given.`));
      actions.append(act('cancel', 'Abort', `Abort deployment #${d.id}? Hosts not done are marked failed; nothing is rolled back.`, 'danger'));
    } else if (d.previous && d.kind === 'deploy' && d.state === 'succeeded') {
      actions.append(h('button', { type: 'button', id: 'deployment-rollback', class: 'danger', onclick: async () => {
        if (!(await confirmDialog(`Roll ${d.stage} back to ${d.previous}?`, 'Roll back'))) return;
        try {
          const r = await api.post(`/v1/release/projects/${api.seg(d.project)}/stages/${api.seg(d.stage)}/deploy`, { version: d.previous, kind: 'rollback' });
          location.hash = link('releases', { deployment: String(r.id) });
        } catch (e) { box.prepend(errorBox(e)); }
      } }, `Roll back to ${d.previous}`));
    }
    box.append(actions);
    const hosts = Object.entries(d.hosts).map(([host, x]) => ({ host, ...x }));
    box.append(h('h3', {}, `Batches (now ${Math.min(d.batch + 1, d.batches.length)} of ${d.batches.length})`));
    box.append(h('ol', { id: 'batches' }, d.batches.map((b, i) => h('li', { class: i === d.batch && !FINISHED.has(d.state) ? 'current' : '' }, b.join(', ')))));
    box.append(table({
      id: 'hosts-table', caption: 'Hosts', rows: hosts, pageSize: 50, empty: 'No host assigned yet.',
      columns: [
        { key: 'host', label: 'Host' }, { key: 'batch', label: 'Batch', num: true, value: (x) => x.batch + 1 },
        { key: 'version', label: 'Target version' }, { key: 'phase', label: 'Phase', render: (x) => stateBadge(x.phase) },
        { key: 'message', label: 'Message' }, { key: 'since_ms', label: 'Since (UTC)', value: (x) => when(x.since_ms) },
      ],
    }));
    if (d.canary || d.samples || d.state === 'analysing') box.append(verdictCard(d));
    box.append(h('h3', {}, `Events (${d.events_total}, the last ${d.events.length} kept)`));
    box.append(table({
      id: 'events-table', caption: 'Events, newest first', rows: d.events.slice().reverse(), pageSize: 20,
      columns: [
        { key: 'at_ms', label: 'At (UTC)', value: (e) => when(e.at_ms) }, { key: 'what', label: 'Event' }, { key: 'detail', label: 'Detail' },
      ],
    }));
    return d;
  }
  const d = await draw();
  if (!FINISHED.has(d.state)) {
    const t = ctx.every(1000, async () => {
      try { const x = await draw(); if (FINISHED.has(x.state)) clearInterval(t); } catch (e) { clearInterval(t); box.prepend(errorBox(e)); }
    });
  }
}

export const page = {
  id: 'releases',
  title: 'Releases',
  nav: true,
  async render(view, params, ctx) {
    view.append(h('h1', {}, 'Releases'));
    if (params.deployment || params.project) view.append(h('p', {}, h('a', { href: link('releases') }, '← All pipelines')));
    if (params.deployment) return deployment(view, params.deployment, ctx);
    if (params.project) return project(view, params.project, params);
    return overview(view, params);
  },
};
