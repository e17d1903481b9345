// Online moves of one proxy, through the center (issue #24): the slot tables of its Redis groups with
// `distribution = "slots"`, a migration plan for servers added or removed, running it (or one range) behind
// a confirmation with its progress while it runs, and stopping it; the MySQL reshard of a sharded listener
// (phase, copy progress, last verify, cut-over pause) with PAUSE / RESUME / ABORT / CONFIRM behind a
// confirmation, and its dry-run plan. Reads need `read` on the proxy's namespace, moves `publish`; every
// figure is the proxy's admin port's own answer (web::moves parses it, keeping what it does not know).
import * as api from '../api.js';
import { h, clear, table, tabs, errorBox, toast, confirmDialog, barChart, badge, field, select, link } from '../ui.js';

function base(key) { return `/console/api/proxies/${key.split('/').map(api.seg).join('/')}/moves`; }

/** Replaces an element's children, skipping the absent ones (`replaceChildren` would write "null"). */
function fill(el, ...kids) { el.replaceChildren(...kids.flat().filter((k) => k !== null && k !== undefined && k !== false)); }

const int = (n) => (n === null || n === undefined ? '' : Math.round(n).toLocaleString('en-US'));

/** A progress bar with its text (`value` of `max`). */
function progress(id, value, max, text) {
  return h('div', { class: 'row' },
    h('progress', { id, value: Math.max(0, value), max: Math.max(1, max), 'aria-label': text }),
    h('span', { id: `${id}-text` }, text));
}

function jobCard(job, onStop) {
  if (!job) return h('p', { class: 'muted', id: 'slots-job-state' }, 'No migration has run in this proxy process.');
  const n = job.moves || 0;
  const done = job.running ? Math.max(0, (job.move || 1) - 1) : (job.state === 'done' ? n : Math.max(0, (job.move || 1) - 1));
  return h('div', {},
    h('p', { class: 'row' },
      h('strong', {}, `Migration of ${job.group}`),
      h('span', { id: 'slots-job-state' }, badge(job.state, job.running ? 'warn' : job.state === 'done' ? 'ok' : 'bad'))),
    progress('slots-progress', done, n, `${done} of ${n} move(s) done`),
    h('dl', { class: 'facts', id: 'slots-job' },
      h('dt', {}, 'Move'), h('dd', { id: 'slots-job-move' }, `${job.move ?? '?'} of ${n}${job.current ? ` (${job.current})` : ''}`),
      h('dt', {}, 'Keys moved by the mover'), h('dd', { id: 'slots-job-moved' }, int(job.moved)),
      h('dt', {}, 'Rate'), h('dd', { id: 'slots-job-rate' }, `${int(job.keys_per_s)} keys/s`),
      h('dt', {}, 'This move'), h('dd', { id: 'slots-job-scan' }, `scanned ${int(job.scanned)} keys, ${int(job.passes)} pass(es)`),
      h('dt', {}, 'Elapsed'), h('dd', {}, `${job.seconds ?? '?'} s`),
      h('dt', {}, 'Ranges left'), h('dd', { id: 'slots-job-left' }, (job.left || []).length ? job.left.join(', ') : '—')),
    job.running ? h('button', { type: 'button', id: 'slots-stop', class: 'danger', onclick: onStop }, 'Stop after the current batch') : null);
}

function groupBlock(g) {
  const perServer = new Map((g.servers || []).map((s) => [s, 0]));
  for (const r of g.ranges) perServer.set(r.server, (perServer.get(r.server) || 0) + r.slots);
  return h('section', { class: 'card' },
    h('h3', {}, `Group ${g.name}`),
    h('div', { class: 'charts' }, barChart({ title: `Slots per server (${g.name})`, items: [...perServer].map(([label, value]) => ({ label, value })) })),
    table({
      id: `slots-table-${g.name}`, caption: `Slot table of ${g.name}`, rows: g.ranges, pageSize: 50,
      columns: [
        { key: 'range', label: 'Range', value: (r) => (r.start === r.end ? `${r.start}` : `${r.start}-${r.end}`) },
        { key: 'slots', label: 'Slots', num: true },
        { key: 'server', label: 'Server' },
        { key: 'migrating_to', label: 'Moving to', value: (r) => r.migrating_to || '', render: (r) => (r.migrating_to ? badge(`→ ${r.migrating_to}`, 'warn') : '') },
      ],
    }));
}

async function slotsTab(panel, key, ctx) {
  const jobBox = h('div', { class: 'card', id: 'slots-job-card', 'aria-live': 'polite' });
  const groupsBox = h('div', { id: 'slots-groups' });
  const out = h('div', { id: 'slots-result' });
  let first = await api.get(`${base(key)}/slots`);
  const groups = first.groups;
  panel.append(h('h2', {}, 'Migration'), jobBox, out);
  const stop = async () => {
    if (!(await confirmDialog('Stop the slot migration after its current batch? The range being moved stays marked as moving (clients are served correctly); run the same move again to finish it.', 'Stop'))) return;
    try { const r = await api.post(`${base(key)}/slots`, { action: 'stop' }); fill(out, h('p', { role: 'status' }, r.reply)); } catch (e) { fill(out, errorBox(e)); }
  };
  const draw = (r) => {
    fill(jobBox, jobCard(r.job, stop));
    fill(groupsBox, ...(r.groups.length ? r.groups.map(groupBlock) : [h('p', { class: 'muted' }, 'No Redis group with distribution = "slots" in this proxy.')]),
      ...(r.lines.length ? [h('pre', { class: 'muted' }, r.lines.join('\n'))] : []));
  };
  draw(first);
  panel.append(h('h2', {}, 'Slot tables'), groupsBox);
  // Progress: every second while a move runs, every 5 s otherwise.
  let lastPoll = Date.now();
  ctx.every(1000, () => {
    if (!jobBox.isConnected) return;
    const running = jobBox.querySelector('#slots-stop') !== null;
    if (!running && Date.now() - lastPoll < 5000) return;
    lastPoll = Date.now();
    api.get(`${base(key)}/slots`).then(draw).catch(() => {});
  });
  if (groups.length === 0) return;

  // The plan: servers without slots are the added ones; checked servers are planned out.
  const names = groups.map((g) => g.name);
  const group = select(names, names[0], { id: 'plan-group' });
  const removeBox = h('div', { id: 'plan-remove', class: 'row' });
  const rate = h('input', { id: 'plan-rate', type: 'number', min: '0', value: '5000' });
  const planOut = h('div', { id: 'plan-result' });
  const servers = () => (groups.find((g) => g.name === group.value) || groups[0]).servers || [];
  const drawRemove = () => fill(removeBox, h('span', { class: 'muted' }, 'Remove:'), ...servers().map((s) =>
    h('label', {}, h('input', { type: 'checkbox', value: s, id: `plan-remove-${s}` }), ` ${s}`)));
  group.addEventListener('change', () => { drawRemove(); drawMove(); });
  drawRemove();
  const removed = () => [...removeBox.querySelectorAll('input:checked')].map((i) => i.value);
  const runPlan = async (plan) => {
    const rm = removed();
    const what = plan.moves.map((m) => `${m.range} ${m.from}→${m.to}`).join(', ');
    if (!(await confirmDialog(`Run the plan on group ${group.value}: ${plan.moves.length} move(s) (${what}) at ${rate.value || 'unlimited'} keys/s? Clients keep being served; each range is published as moving, its keys moved, then its new owner published.`, 'Run the plan'))) return;
    try {
      const r = await api.post(`${base(key)}/slots`, { action: 'rebalance', group: group.value, remove: rm, rate: Number(rate.value) || 0 });
      toast('Migration started');
      fill(out, h('p', { role: 'status', id: 'slots-started' }, r.reply.split('\n')[0]));
      draw(await api.get(`${base(key)}/slots`));
    } catch (e) { fill(out, errorBox(e)); }
  };
  const makePlan = async () => {
    fill(planOut, h('p', { class: 'muted' }, 'Sampling every server…'));
    try {
      const p = await api.get(`${base(key)}/slots/plan${api.q({ group: group.value, remove: removed().join(',') })}`);
      fill(planOut, 
        table({
          id: 'plan-servers', caption: 'Keys per server now and after the plan', rows: p.servers,
          columns: [
            { key: 'name', label: 'Server' },
            { key: 'keys_now', label: 'Keys now', num: true, render: (s) => int(s.keys_now) },
            { key: 'keys_after', label: 'Keys after', num: true, render: (s) => int(s.keys_after) },
            { key: 'slots_after', label: 'Slots after', num: true },
            { key: 'memory_bytes', label: 'Memory (bytes)', num: true, render: (s) => int(s.memory_bytes) },
          ],
        }),
        p.balanced
          ? h('p', { id: 'plan-balanced' }, 'Balanced: nothing to move.')
          : table({
            id: 'plan-moves', caption: 'Ranges that move', rows: p.moves,
            columns: [
              { key: 'range', label: 'Range' }, { key: 'from', label: 'From' }, { key: 'to', label: 'To' },
              { key: 'keys', label: 'Est. keys', num: true, render: (m) => int(m.keys) },
              { key: 'bytes', label: 'Est. bytes', num: true, render: (m) => int(m.bytes) },
            ],
          }),
        p.lines.length ? h('pre', { class: 'muted' }, p.lines.join('\n')) : null,
        p.balanced ? null : h('button', { type: 'button', id: 'plan-run', onclick: () => runPlan(p) }, 'Run this plan…'));
    } catch (e) { fill(planOut, errorBox(e)); }
  };
  panel.append(h('h2', {}, 'Plan'), h('div', { class: 'card' },
    h('div', { class: 'row' }, field('Group', group).el, field('Rate (keys/s, 0: unlimited)', rate).el),
    removeBox,
    h('button', { type: 'button', id: 'plan-submit', onclick: makePlan }, 'Plan'), planOut));

  // One range by hand.
  const range = h('input', { id: 'move-range', placeholder: 'first-last, e.g. 0-4095' });
  const toBox = h('span', {});
  const drawMove = () => fill(toBox, field('To server', select(servers(), servers()[1] || servers()[0], { id: 'move-to' })).el);
  drawMove();
  const moveOut = h('div', { id: 'move-result' });
  const move = async () => {
    const to = document.getElementById('move-to').value;
    if (!(await confirmDialog(`Move slots ${range.value} of group ${group.value} to ${to} at ${rate.value || 'unlimited'} keys/s?`, 'Move'))) return;
    try {
      const r = await api.post(`${base(key)}/slots`, { action: 'migrate', group: group.value, range: range.value, to, rate: Number(rate.value) || 0 });
      fill(moveOut, h('p', { role: 'status', id: 'move-started' }, r.reply));
      fill(planOut, h('p', { class: 'muted' }, 'A move started: plan again to see the table after it.'));
      draw(await api.get(`${base(key)}/slots`));
    } catch (e) { fill(moveOut, errorBox(e)); }
  };
  panel.append(h('h2', {}, 'Move one range'), h('div', { class: 'card' },
    h('div', { class: 'row' }, field('Slot range', range).el, toBox),
    h('button', { type: 'button', id: 'move-submit', onclick: move }, 'Move…'), moveOut));
}

const ACTIONS = {
  pause: ['Pause the copy after its current batch? Dual writes stay on.', 'Pause'],
  resume: ['Resume copying from the key reached?', 'Resume'],
  abort: ['Abort the reshard? The old layout serves and is written alone again; the new tables keep their rows for inspection.', 'Abort'],
  confirm: ['Confirm the reshard? The new rule becomes the table\'s rule and the old tables are no longer written.', 'Confirm'],
};

async function reshardTab(panel, key, ctx) {
  const card = h('div', { class: 'card', id: 'reshard-card', 'aria-live': 'polite' });
  const out = h('div', { id: 'reshard-result' });
  const draw = (r) => {
    const fields = h('dl', { class: 'facts', id: 'reshard-fields' }, r.fields.map(([k, v]) => [h('dt', {}, k || '·'), h('dd', { 'data-field': k }, v)]));
    const parts = r.partitions || 0;
    fill(card, 
      h('p', { class: 'row' }, h('strong', { id: 'reshard-title' }, r.title || 'no reshard'), r.state ? h('span', { id: 'reshard-state' }, badge(r.state, r.state === 'done' ? 'ok' : 'warn')) : null,
        r.phase ? h('span', { id: 'reshard-phase' }, badge(r.phase, '')) : null),
      r.running && parts ? progress('reshard-progress', r.partition || 0, parts, `partition ${r.partition} of ${parts}`) : null,
      fields,
      h('div', { class: 'row' }, Object.entries(ACTIONS).map(([a, [, label]]) =>
        h('button', { type: 'button', id: `reshard-${a}`, class: a === 'abort' ? 'danger' : '', disabled: !r.running, onclick: () => act(a) }, label))));
  };
  const refresh = async () => draw(await api.get(`${base(key)}/reshard`));
  const act = async (a) => {
    const [text, label] = ACTIONS[a];
    if (!(await confirmDialog(text, label))) return;
    try {
      const r = await api.post(`${base(key)}/reshard`, { action: a });
      fill(out, h('p', { role: 'status', id: 'reshard-reply' }, r.reply));
      toast(`RESHARD ${a.toUpperCase()}`);
    } catch (e) { fill(out, errorBox(e)); }
    await refresh().catch((e) => out.append(errorBox(e)));
  };
  panel.append(h('h2', {}, 'Reshard status'), card, out);
  await refresh();
  ctx.every(2000, () => { if (card.isConnected) refresh().catch(() => {}); });

  const sharding = h('input', { id: 'reshard-sharding', placeholder: 'sharding section, e.g. app' });
  const tbl = h('input', { id: 'reshard-table', placeholder: 'table, e.g. orders' });
  const rule = h('input', { id: 'reshard-rule', placeholder: 'new rule, e.g. orders_v2' });
  const rate = h('input', { id: 'reshard-rate', type: 'number', min: '0', placeholder: 'bytes/s (default: assumed 8 MiB/s)' });
  const planOut = h('div', { id: 'reshard-plan' });
  const plan = async () => {
    try {
      const p = await api.get(`${base(key)}/reshard/plan${api.q({ sharding: sharding.value, table: tbl.value, rule: rule.value, rate: rate.value })}`);
      fill(planOut, h('p', { id: 'reshard-plan-title' }, p.title),
        table({
          id: 'reshard-plan-table', caption: 'Old partitions and where their rows go', rows: p.partitions, pageSize: 50,
          columns: [
            { key: 'old', label: 'Old partition' },
            { key: 'rows', label: 'Est. rows', num: true },
            { key: 'bytes', label: 'Est. bytes', num: true },
            { key: 'to', label: 'New partitions' },
          ],
        }),
        h('pre', { id: 'reshard-plan-notes' }, p.lines.join('\n')));
    } catch (e) { fill(planOut, errorBox(e)); }
  };
  panel.append(h('h2', {}, 'Dry run'), h('div', { class: 'card' },
    h('div', { class: 'row' }, field('Sharding', sharding).el, field('Table', tbl).el, field('New rule', rule).el, field('Rate', rate).el),
    h('button', { type: 'button', id: 'reshard-plan-submit', onclick: plan }, 'Plan'), planOut));
}

export const page = {
  id: 'moves',
  title: 'Online moves',
  nav: false,
  async render(view, params, ctx) {
    const key = params.key || '';
    view.append(h('p', {}, h('a', { href: link('proxy', { key }) }, `← Proxy ${key.split('/').pop()}`)));
    view.append(h('h1', {}, `Online moves · ${key.split('/').pop()}`),
      h('p', { class: 'muted' }, 'Redis slot migration and MySQL resharding on this proxy, as its admin port reports them.'));
    view.append(tabs([
      { id: 'slots', label: 'Redis slots', render: (p) => slotsTab(p, key, ctx) },
      { id: 'reshard', label: 'MySQL reshard', render: (p) => reshardTab(p, key, ctx) },
    ], params.tab, (id) => window.history.replaceState(null, '', link('moves', { key, tab: id }))));
  },
};
