// Access: the audit log (filtered by target prefix on the server, by actor, action and text in the page),
// users (create or change roles and the administrator flag), API tokens (create — the secret is shown once —
// and revoke, behind the confirmation dialog) and grants. The API allows all of it to administrators only;
// others see its `forbidden` answer where they asked.
import * as api from '../api.js';
import { h, table, field, select, link, badge, confirmDialog, errorBox, toast, clear, tabs } from '../ui.js';

const when = (ms) => (ms ? new Date(ms).toISOString().replace('T', ' ').replace(/\.\d+Z$/, '') : '');

async function audit(panel, params) {
  const form = h('form', { id: 'audit-form', class: 'row' });
  const target = h('input', { id: 'audit-target', value: params.target || '', placeholder: 'shop/DEV' });
  const limit = select(['100', '500', '2000'], params.limit || '500', { id: 'audit-limit' });
  form.append(field('Target starts with', target).el, field('Newest', limit).el, h('button', { type: 'submit', id: 'audit-submit' }, 'Show'));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    location.hash = link('access', { tab: 'audit', target: target.value, limit: limit.value });
  });
  panel.append(form);
  const rows = await api.get(`/v1/audit${api.q({ target: params.target, limit: params.limit || 500 })}`);
  // Narrow by actor and action in the page (the table's filter box searches every column as well).
  const actors = ['', ...new Set(rows.map((r) => r.actor))].sort();
  const actions = ['', ...new Set(rows.map((r) => r.action))].sort();
  const actorSel = select(actors.map((a) => [a, a || 'anyone']), params.actor || '', { id: 'audit-actor' });
  const actionSel = select(actions.map((a) => [a, a || 'any action']), params.action || '', { id: 'audit-action' });
  const holder = h('div');
  const draw = () => {
    clear(holder);
    const shown = rows.filter((r) => (!actorSel.value || r.actor === actorSel.value) && (!actionSel.value || r.action === actionSel.value));
    holder.append(table({
      id: 'audit-table', caption: 'Audit log, newest first', rows: shown, pageSize: 50, empty: 'No entry.',
      columns: [
        { key: 'id', label: '#', num: true },
        { key: 'at_ms', label: 'At (UTC)', value: (r) => r.at_ms, render: (r) => when(r.at_ms) },
        { key: 'actor', label: 'Actor' },
        { key: 'action', label: 'Action', render: (r) => (r.action === 'denied' ? badge('denied', 'bad') : r.action) },
        { key: 'target', label: 'Target' },
        { key: 'detail', label: 'Detail', value: (r) => (r.detail === null || r.detail === undefined ? '' : JSON.stringify(r.detail)) },
      ],
    }));
  };
  actorSel.addEventListener('change', draw);
  actionSel.addEventListener('change', draw);
  panel.append(h('div', { class: 'row' }, field('Actor', actorSel).el, field('Action', actionSel).el), holder);
  draw();
}

async function users(panel) {
  const list = await api.get('/v1/users');
  panel.append(table({
    id: 'users-table', caption: 'Users', rows: list, empty: 'No user.',
    columns: [
      { key: 'name', label: 'User' },
      { key: 'roles', label: 'Roles', value: (u) => (u.roles || []).join(', ') },
      { key: 'admin', label: 'Administrator', value: (u) => (u.admin ? 'yes' : ''), render: (u) => (u.admin ? badge('admin', 'warn') : '') },
    ],
  }));
  const form = h('form', { id: 'user-form', class: 'card' });
  const name = h('input', { id: 'user-name', required: true, autocomplete: 'off' });
  const roles = h('input', { id: 'user-roles', placeholder: 'release-managers, agent' });
  const admin = h('input', { id: 'user-admin', type: 'checkbox' });
  const fName = field('Name', name);
  const err = h('div');
  form.append(h('h3', {}, 'Create or update a user'), fName.el, field('Roles', roles, 'comma-separated').el,
    h('div', { class: 'row' }, admin, h('label', { for: 'user-admin' }, 'Administrator')),
    h('button', { type: 'submit', class: 'primary', id: 'user-submit' }, 'Save'), err);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    clear(err);
    fName.error('');
    const body = { name: name.value.trim(), roles: roles.value.split(',').map((r) => r.trim()).filter(Boolean), admin: admin.checked };
    if (body.admin && !(await confirmDialog(`Make ${body.name} an administrator (every permission)?`, 'Save'))) return;
    try {
      await api.post('/v1/users', body);
      toast(`user ${body.name} saved`);
      location.hash = link('access', { tab: 'users', t: String(Date.now()) });
    } catch (ex) {
      if (ex.field === 'name') fName.error(ex.message);
      err.append(errorBox(ex));
    }
  });
  panel.append(form);
  panel.append(h('h3', {}, 'Grants'));
  await grants(panel, list);
}

const LEVELS = [['masked_read', 'masked read'], ['read', 'read'], ['edit', 'edit'], ['publish', 'publish']];

// The grant editor: create, change and remove a grant of a user or a role on an application's namespace or
// scope (`*`, a namespace, `release:PROJECT`, `release:PROJECT:STAGE` — a stage is an environment —, a job
// or a service). Every change goes through `PUT /v1/permissions` after the confirmation dialog; a grant is
// removed by putting it with level `none` and no export, as the API defines.
async function grants(panel, users) {
  const [list, apps] = await Promise.all([api.get('/v1/permissions'), api.get('/v1/apps')]);
  const projects = await api.get('/v1/release/projects').catch(() => []);
  const out = h('div', { id: 'grant-result', 'aria-live': 'polite' });
  const reload = (subject) => { location.hash = link('access', { tab: 'users', grant: subject || '', t: String(Date.now()) }); };
  // Asks, then puts the grant; resolves to null when done or cancelled, else to the API's error.
  const put = async (g, question, label) => {
    clear(out);
    if (!(await confirmDialog(question, label))) return null;
    try {
      await api.put('/v1/permissions', g);
      toast(`grant ${g.subject} on ${g.app}/${g.namespace}: ${g.level === 'none' && !g.export && !g.trace_ingest ? 'removed' : g.level}`);
      reload(g.subject);
      return null;
    } catch (ex) {
      out.append(errorBox(ex));
      return ex;
    }
  };
  const form = h('form', { id: 'grant-form', class: 'card' });
  const kind = select([['user', 'user'], ['role', 'role']], 'user', { id: 'grant-kind' });
  const who = h('input', { id: 'grant-who', required: true, autocomplete: 'off', list: 'grant-who-list' });
  const whoList = h('datalist', { id: 'grant-who-list' }, [...new Set([...users.map((u) => u.name), ...users.flatMap((u) => u.roles || [])])].map((n) => h('option', { value: n })));
  const app = select([['*', '* (every application)'], ...apps.map((a) => [a.name, a.name])], apps[0] ? apps[0].name : '*', { id: 'grant-app' });
  const ns = h('input', { id: 'grant-namespace', required: true, autocomplete: 'off', list: 'grant-namespace-list', value: '*' });
  const nsList = h('datalist', { id: 'grant-namespace-list' });
  // `none` with span ingest is an ingest-only grant (docs/tracing.md, "Who may send spans").
  const level = select([['none', 'none'], ...LEVELS], 'read', { id: 'grant-level' });
  const exp = h('input', { id: 'grant-export', type: 'checkbox' });
  const ingest = h('input', { id: 'grant-trace-ingest', type: 'checkbox' });
  const fWho = field('Name', who);
  const fApp = field('Application', app);
  const fNs = field('Namespace or scope', ns, '* · a namespace · release:PROJECT · release:PROJECT:STAGE · a job or service');
  const fillScopes = async () => {
    clear(nsList);
    const names = ['*'];
    if (app.value !== '*') {
      try { names.push(...(await api.get(`/v1/apps/${api.seg(app.value)}/namespaces`)).map((n) => n.name)); } catch (_) { /* suggestions only */ }
    }
    for (const p of projects.filter((x) => app.value === '*' || x.project.app === app.value)) {
      names.push(`release:${p.project.name}`, ...p.project.stages.map((st) => `release:${p.project.name}:${st.name}`));
    }
    nsList.append(...names.map((n) => h('option', { value: n })));
  };
  app.addEventListener('change', fillScopes);
  await fillScopes();
  form.append(h('h3', { id: 'grant-form-title' }, 'Grant or change a permission'),
    h('div', { class: 'row' }, field('Subject', kind).el, fWho.el, whoList, fApp.el, fNs.el, nsList, field('Level', level).el,
      h('div', { class: 'row' }, exp, h('label', { for: 'grant-export' }, 'May export the application')),
      h('div', { class: 'row' }, ingest, h('label', { for: 'grant-trace-ingest' }, 'May send spans of its services'))),
    h('button', { type: 'submit', class: 'primary', id: 'grant-submit' }, 'Save grant…'));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    fWho.error(''); fApp.error(''); fNs.error('');
    const g = { subject: `${kind.value}:${who.value.trim()}`, app: app.value, namespace: ns.value.trim(), level: level.value, export: exp.checked, trace_ingest: ingest.checked };
    if (!who.value.trim()) { fWho.error('a user or role name'); return; }
    if (!g.namespace) { fNs.error('a namespace, * or a scope'); return; }
    const existing = list.find((x) => x.subject === g.subject && x.app === g.app && x.namespace === g.namespace);
    const verb = existing ? `Change ${g.subject} on ${g.app}/${g.namespace} from ${existing.level} to ${g.level}` : `Grant ${g.subject} ${g.level} on ${g.app}/${g.namespace}`;
    const ex = await put(g, `${verb}${g.export ? ', with export' : ''}${g.trace_ingest ? ', with span ingest' : ''}?`, 'Save grant');
    const f = ex && { subject: fWho, app: fApp, namespace: fNs }[ex.field];
    if (f) f.error(ex.message);
  });
  const edit = (g) => {
    const [k, ...rest] = g.subject.split(':');
    kind.value = k === 'role' ? 'role' : 'user';
    who.value = rest.join(':');
    app.value = g.app;
    ns.value = g.namespace;
    level.value = g.level;
    exp.checked = !!g.export;
    ingest.checked = !!g.trace_ingest;
    fillScopes();
    form.scrollIntoView({ block: 'center' });
    who.focus();
  };
  panel.append(table({
    id: 'grants-table', caption: 'Grants (subject: user:NAME or role:NAME)', rows: list, empty: 'No grant.',
    columns: [
      { key: 'subject', label: 'Subject' }, { key: 'app', label: 'Application' }, { key: 'namespace', label: 'Namespace / scope' },
      { key: 'level', label: 'Level' }, { key: 'export', label: 'Export', value: (g) => (g.export ? 'yes' : '') },
      { key: 'trace_ingest', label: 'Spans', value: (g) => (g.trace_ingest ? 'send' : '') },
      { key: 'actions', label: 'Actions', value: () => '', render: (g) => h('span', { class: 'row' },
        h('button', { type: 'button', class: 'grant-edit', 'aria-label': `Edit the grant of ${g.subject} on ${g.app}/${g.namespace}`, onclick: () => edit(g) }, 'Edit'),
        h('button', { type: 'button', class: 'danger grant-remove', 'aria-label': `Remove the grant of ${g.subject} on ${g.app}/${g.namespace}`, onclick: () =>
          put({ subject: g.subject, app: g.app, namespace: g.namespace, level: 'none', export: false },
            `Remove ${g.subject}'s ${g.level}${g.export ? ' and export' : ''} on ${g.app}/${g.namespace}?`, 'Remove') }, 'Remove')) },
    ],
  }));
  panel.append(form, out);
}

async function tokens(panel) {
  const list = await api.get('/v1/tokens');
  const users = await api.get('/v1/users');
  const out = h('div', { id: 'token-result', 'aria-live': 'polite' });
  panel.append(table({
    id: 'tokens-table', caption: 'API tokens (the secret is never shown again after creation)', rows: list, empty: 'No token.',
    columns: [
      { key: 'id', label: 'Id', render: (t) => h('span', { class: 'mono' }, t.id) },
      { key: 'user', label: 'User' },
      { key: 'description', label: 'Description' },
      { key: 'created_ms', label: 'Created (UTC)', value: (t) => when(t.created_ms) },
      { key: 'expires_ms', label: 'Expires (UTC)', value: (t) => (t.expires_ms ? when(t.expires_ms) : 'never') },
      { key: 'state', label: 'State', value: (t) => (t.expired ? 'expired' : t.bootstrap ? 'bootstrap' : 'valid'),
        render: (t) => badge(t.expired ? 'expired' : t.bootstrap ? 'bootstrap' : 'valid', t.expired ? 'bad' : 'ok') },
      { key: 'revoke', label: 'Revoke', value: () => '', render: (t) => h('button', { type: 'button', class: 'danger', 'aria-label': `Revoke token ${t.id} of ${t.user}`, onclick: async () => {
        if (!(await confirmDialog(`Revoke token ${t.id} of ${t.user} (${t.description || 'no description'})? Its sessions end too.`, 'Revoke'))) return;
        try {
          const r = await api.del(`/v1/tokens/${api.seg(t.id)}`);
          toast(`${r.revoked} token(s) revoked`);
          location.hash = link('access', { tab: 'tokens', t: String(Date.now()) });
        } catch (e) { out.append(errorBox(e)); }
      } }, 'Revoke') },
    ],
  }));
  const form = h('form', { id: 'token-form', class: 'card' });
  const user = select(users.map((u) => u.name), undefined, { id: 'token-user' });
  const desc = h('input', { id: 'token-description', placeholder: 'ci pipeline' });
  const ttl = h('input', { id: 'token-ttl', type: 'number', min: '1', placeholder: 'no expiry' });
  form.append(h('h3', {}, 'Create a token'), h('div', { class: 'row' }, field('User', user).el, field('Description', desc).el, field('Lifetime (s)', ttl).el,
    h('button', { type: 'submit', class: 'primary', id: 'token-submit' }, 'Create')));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    clear(out);
    try {
      const body = { user: user.value, description: desc.value };
      if (ttl.value) body.ttl_s = Number(ttl.value);
      const r = await api.post('/v1/tokens', body);
      out.append(h('div', { class: 'card', id: 'new-token' }, h('p', {}, `Token ${r.id} for ${r.user} — copy it now, it is not shown again:`),
        h('pre', { class: 'secret', id: 'new-token-secret' }, r.token)));
    } catch (ex) { out.append(errorBox(ex)); }
  });
  panel.append(form, out);
}

// Change a console password: your own (any user), or any user's as an administrator. The API
// (`PUT /v1/users/NAME/password`) checks who may and the length; the new password is typed twice.
async function password(panel, ctx) {
  const me = ctx.user || { name: '' };
  const form = h('form', { id: 'password-form', class: 'card' });
  const name = h('input', { id: 'password-user', value: me.name, required: true, autocomplete: 'username', readonly: me.admin ? null : true });
  const pw = h('input', { id: 'password-new', type: 'password', required: true, autocomplete: 'new-password' });
  const again = h('input', { id: 'password-again', type: 'password', required: true, autocomplete: 'new-password' });
  const fPw = field('New password', pw, 'at least 8 characters');
  const fAgain = field('New password again', again);
  const out = h('div', { id: 'password-result', 'aria-live': 'polite' });
  form.append(h('h3', {}, 'Change a console password'),
    field('User', name, me.admin ? 'administrators may set any user\'s password' : 'your own').el, fPw.el, fAgain.el,
    h('button', { type: 'submit', class: 'primary', id: 'password-submit' }, 'Change password…'), out);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    clear(out);
    fPw.error(''); fAgain.error('');
    if (pw.value !== again.value) { fAgain.error('the two passwords differ'); return; }
    if (!(await confirmDialog(`Change the console password of ${name.value}?`, 'Change password'))) return;
    try {
      await api.put(`/v1/users/${api.seg(name.value.trim())}/password`, { password: pw.value });
      pw.value = ''; again.value = '';
      toast(`password of ${name.value} changed`);
      out.append(h('p', { id: 'password-done' }, `The password of ${name.value} was changed.`));
    } catch (ex) {
      if (ex.field === 'password') fPw.error(ex.message);
      out.append(errorBox(ex));
    }
  });
  panel.append(form);
}

export const page = {
  id: 'access',
  title: 'Access',
  nav: true,
  async render(view, params, ctx) {
    view.append(h('h1', {}, 'Access: audit, users and tokens'));
    view.append(tabs([
      { id: 'audit', label: 'Audit log', render: (p) => audit(p, params) },
      { id: 'users', label: 'Users & grants', render: (p) => users(p) },
      { id: 'password', label: 'Password', render: (p) => password(p, ctx) },
      { id: 'tokens', label: 'Tokens', render: (p) => tokens(p) },
    ], params.tab || 'audit'));
  },
};
