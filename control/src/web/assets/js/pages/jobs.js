// Distributed jobs: the jobs of an environment (schedule, next firing, paused) with their dependency graph,
// a job's runs (trigger, pause/resume with confirmation), a run's items with worker, attempts and log
// (stop a running run). Levels: read to see, edit to act (the API decides; its errors are shown).
import * as api from '../api.js';
import { h, table, field, select, link, badge, confirmDialog, errorBox, toast, clear, graphView } from '../ui.js';

const STATE_KIND = { ok: 'ok', running: 'warn', pending: 'warn', failed: 'bad', lost: 'bad', stopped: 'warn', skipped: 'warn' };
const when = (ms) => (ms ? new Date(ms).toISOString().replace('T', ' ').replace('Z', '') : '');
const sched = (s) => {
  switch (s.type) {
    case 'cron': return `cron ${s.expr} (${s.tz})`;
    case 'rate': return `every ${s.every_ms} ms`;
    case 'delay': return `${s.delay_ms} ms after each run`;
    case 'once': return `once at ${when(s.at_ms)}`;
    default: return 'manual';
  }
};

export const page = {
  id: 'jobs',
  title: 'Jobs',
  nav: true,
  async render(view, params) {
    const envs = await api.get('/v1/envs');
    const env = params.env || envs[0];
    view.append(h('h1', {}, 'Jobs'));
    const envSel = select(envs, env, { id: 'jobs-env' });
    envSel.addEventListener('change', () => { location.hash = link('jobs', { env: envSel.value }); });
    view.append(field('Environment', envSel).el);
    const jobs = await api.get(`/v1/jobs/${api.seg(env)}`);
    view.append(table({
      id: 'jobs-table', caption: `Jobs in ${env}`, rows: jobs, empty: 'No job.',
      columns: [
        { key: 'name', label: 'Job', value: (j) => j.job.name, render: (j) => h('a', { href: link('jobs', { env, job: j.job.name }) }, j.job.name) },
        { key: 'app', label: 'Application', value: (j) => j.job.spec.app },
        { key: 'kind', label: 'Kind', value: (j) => j.job.spec.kind.type },
        { key: 'schedule', label: 'Schedule', value: (j) => sched(j.job.spec.schedule) },
        { key: 'after', label: 'After', value: (j) => (j.job.spec.after || []).join(', ') },
        { key: 'next', label: 'Next firing (UTC)', value: (j) => when(j.next_ms) },
        { key: 'paused', label: 'State', value: (j) => (j.job.paused ? 'paused' : 'active'), render: (j) => badge(j.job.paused ? 'paused' : 'active', j.job.paused ? 'warn' : 'ok') },
      ],
    }));
    const edges = jobs.flatMap((j) => (j.job.spec.after || []).map((u) => [u, j.job.name]));
    if (edges.length > 0) {
      view.append(h('h2', {}, 'Dependencies'), h('div', { id: 'jobs-graph' }, graphView({
        title: `Job dependencies in ${env}`,
        nodes: jobs.map((j) => ({ id: j.job.name, label: j.job.name })),
        edges,
      })));
    }
    if (!params.job) return;
    const jobPath = `/v1/jobs/${api.seg(env)}/${api.seg(params.job)}`;
    const detail = h('section', { class: 'card', 'aria-labelledby': 'job-title' });
    view.append(detail);
    const act = (label, id, what, path) => h('button', { type: 'button', id, onclick: async () => {
      if (!(await confirmDialog(`${what} job ${params.job}?`, label))) return;
      try { await api.post(path); toast(`${params.job}: ${label.toLowerCase()}`); draw(); } catch (e) { detail.prepend(errorBox(e)); }
    } }, label);
    const draw = async () => {
      clear(detail);
      const j = await api.get(jobPath);
      detail.append(h('h2', { id: 'job-title' }, `${j.name} (${j.spec.app})`));
      if (j.spec.description) detail.append(h('p', {}, j.spec.description));
      detail.append(h('p', { class: 'muted' }, `${j.spec.kind.type} · ${sched(j.spec.schedule)} · timeout ${j.spec.timeout_ms} ms · retries ${j.spec.retries} · ${j.spec.delivery.replaceAll('_', '-')}`));
      detail.append(h('div', { class: 'row' },
        act('Trigger', 'job-trigger', 'Run now', `${jobPath}/trigger`),
        j.paused ? act('Resume', 'job-resume', 'Resume', `${jobPath}/resume`) : act('Pause', 'job-pause', 'Pause', `${jobPath}/pause`)));
      const runs = await api.get(`${jobPath}/runs?limit=100`);
      detail.append(table({
        id: 'runs-table', caption: 'Runs, newest first', rows: runs, empty: 'No run yet.',
        columns: [
          { key: 'scheduled_ms', label: 'Scheduled (UTC)', value: (r) => r.scheduled_ms, render: (r) => h('a', { href: link('jobs', { env, job: params.job, run: String(r.scheduled_ms) }) }, when(r.scheduled_ms)) },
          { key: 'cause', label: 'Cause' },
          { key: 'state', label: 'State', render: (r) => badge(r.state, STATE_KIND[r.state]) },
          { key: 'items', label: 'Items', num: true },
          { key: 'late', label: 'Late (ms)', num: true, value: (r) => r.fired_ms - r.scheduled_ms },
          { key: 'node', label: 'Node' },
          { key: 'detail', label: 'Detail', value: (r) => r.detail || '' },
        ],
      }));
      if (!params.run) return;
      const runPath = `${jobPath}/runs/${api.seg(params.run)}`;
      const r = await api.get(runPath);
      const box = h('section', { class: 'card', id: 'run-detail', 'aria-label': `Run ${r.id}` });
      box.append(h('h3', {}, `Run ${r.id}: `, badge(r.state, STATE_KIND[r.state])));
      if (r.state === 'running') {
        box.append(h('button', { type: 'button', id: 'run-stop', onclick: async () => {
          if (!(await confirmDialog(`Stop run ${r.id}? Running items are killed.`, 'Stop'))) return;
          try { await api.post(`${runPath}/stop`); toast('stopped'); draw(); } catch (e) { box.prepend(errorBox(e)); }
        } }, 'Stop'));
      }
      box.append(table({
        id: 'items-table', caption: 'Items', rows: r.item_list, empty: 'No item.',
        columns: [
          { key: 'idx', label: '#', num: true },
          { key: 'params', label: 'Parameters', value: (i) => JSON.stringify(i.params) },
          { key: 'state', label: 'State', render: (i) => badge(i.state, STATE_KIND[i.state]) },
          { key: 'worker', label: 'Worker', value: (i) => i.worker || '' },
          { key: 'attempts', label: 'Attempts', num: true },
          { key: 'exit_code', label: 'Exit', value: (i) => (i.exit_code === null ? '' : i.exit_code) },
          { key: 'result', label: 'Result', value: (i) => i.result || '' },
        ],
      }));
      for (const i of r.item_list) {
        if (i.log) box.append(h('h4', {}, `Log of item ${i.idx}`), h('pre', { class: 'item-log' }, i.log));
      }
      detail.append(box);
    };
    await draw();
  },
};
