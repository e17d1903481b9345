// Release management (docs/release.md): pipelines (projects with the version each stage runs), deployments in
// progress with their batches, hosts, approvals and canary verdict, the operator's actions (approve, pause,
// resume, abort) behind the confirmation dialog, deploy / roll back / restart a stage, versions with their
// build gate and its logs, and the history of finished deployments. Levels are the API's: read to see,
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

async function overview(view) {
  const projects = await api.get('/v1/release/projects');
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
    box.append(h('p', { id: 'canary-samples' }, `Samples so far: canary ${d.samples.canary} requests (${d.samples.canary_errors} errors), baseline ${d.samples.baseline} requests (${d.samples.baseline_errors} errors)`));
  }
  const v = d.canary;
  if (!v) { box.append(h('p', { class: 'muted' }, d.samples ? 'Judging…' : 'No verdict.')); return box; }
  box.append(h('p', {}, badge(v.pass ? 'pass' : 'fail', v.pass ? 'ok' : 'bad'), ' ', v.reason));
  const pct = (x) => `${(x * 100).toFixed(2)} %`;
  box.append(table({
    id: 'canary-table', caption: 'Canary against baseline, same period', pageSize: 5,
    rows: [{ group: 'canary', ...v.canary }, { group: 'baseline', ...v.baseline }],
    columns: [
      { key: 'group', label: 'Group' }, { key: 'requests', label: 'Requests', num: true },
      { key: 'errors', label: 'Errors', num: true }, { key: 'error_rate', label: 'Error rate', num: true, value: (g) => g.error_rate, render: (g) => pct(g.error_rate) },
      { key: 'p50_us', label: 'Median latency (µs)', num: true },
    ],
  }));
  box.append(h('p', { class: 'muted' }, `errors: z = ${v.errors_z.toFixed(3)}, p = ${v.errors_p.toPrecision(3)}` +
    (v.latency_p !== null && v.latency_p !== undefined ? `; latency: U = ${v.latency_u}, p = ${v.latency_p.toPrecision(3)}` : '; latency not judged')));
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
    return overview(view);
  },
};
