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
  const grants = await api.get('/v1/permissions');
  panel.append(table({
    id: 'grants-table', caption: 'Grants (subject: user:NAME or role:NAME)', rows: grants, empty: 'No grant.',
    columns: [
      { key: 'subject', label: 'Subject' }, { key: 'app', label: 'Application' }, { key: 'namespace', label: 'Namespace / scope' },
      { key: 'level', label: 'Level' }, { key: 'export', label: 'Export', value: (g) => (g.export ? 'yes' : '') },
    ],
  }));
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

export const page = {
  id: 'access',
  title: 'Access',
  nav: true,
  async render(view, params) {
    view.append(h('h1', {}, 'Access: audit, users and tokens'));
    view.append(tabs([
      { id: 'audit', label: 'Audit log', render: (p) => audit(p, params) },
      { id: 'users', label: 'Users & grants', render: (p) => users(p) },
      { id: 'tokens', label: 'Tokens', render: (p) => tokens(p) },
    ], params.tab || 'audit'));
  },
};
