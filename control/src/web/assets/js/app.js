// The console's shell: session (login/logout), navigation, and the page registry. A page is a module in
// ./pages/ exporting `page = {id, title, nav, render(view, params, ctx)}`; add it to PAGES below (and to
// web::ASSETS on the Rust side). See docs/console.md, "Adding a page".
import * as api from './api.js';
import { h, clear, errorBox, route } from './ui.js';
import { page as config } from './pages/config.js';
import { page as review } from './pages/review.js';
import { page as proxies } from './pages/proxies.js';
import { page as proxy } from './pages/proxy.js';
import { page as registry } from './pages/registry.js';
import { page as jobs } from './pages/jobs.js';
import { page as releases } from './pages/releases.js';
import { page as traces } from './pages/traces.js';
import { page as access } from './pages/access.js';
// --- online moves (Redis slots, MySQL reshard) ---
import { page as moves } from './pages/moves.js';
// --- end of online moves ---

const PAGES = [config, review, proxies, proxy, registry, jobs, releases, traces, access, moves];

const ctx = { user: null, timers: [] };

/** Pages register periodic refreshes here; they are stopped when the page changes. */
ctx.every = (ms, f) => { const t = setInterval(f, ms); ctx.timers.push(t); return t; };

function showLogin(show) {
  document.getElementById('login').hidden = !show;
  document.getElementById('view').hidden = show;
  document.getElementById('nav').hidden = show;
  document.getElementById('logout').hidden = show;
  if (show) {
    document.getElementById('who').textContent = '';
    document.getElementById('login-token').focus();
  }
}

function buildNav(current) {
  const nav = clear(document.getElementById('nav'));
  for (const p of PAGES.filter((x) => x.nav)) {
    nav.append(h('a', { href: `#/${p.id}`, 'aria-current': p.id === current ? 'page' : null }, p.title));
  }
}

let generation = 0;

async function render() {
  const gen = ++generation;
  ctx.timers.forEach(clearInterval);
  ctx.timers = [];
  const { page, params } = route();
  const p = PAGES.find((x) => x.id === page) || PAGES[0];
  buildNav(p.id);
  document.getElementById('nav').classList.remove('open');
  // Each render draws into a container of its own: a page still awaiting the API when the user moves on
  // keeps writing into its detached container, never into the next page, and starts no timer.
  const view = h('div', { class: 'page' });
  clear(document.getElementById('view')).append(view);
  const pageCtx = { ...ctx, every: (ms, f) => (gen === generation ? ctx.every(ms, f) : null) };
  document.title = `${p.title} · Furrow console`;
  try {
    await p.render(view, params, pageCtx);
  } catch (e) {
    view.append(errorBox(e));
  }
}

async function start() {
  api.whenUnauthorized(() => { ctx.user = null; showLogin(true); });
  document.getElementById('login-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const box = clear(document.getElementById('login-error'));
    const byPassword = document.getElementById('login-mode-password').checked;
    const token = document.getElementById('login-token');
    const user = document.getElementById('login-user');
    const password = document.getElementById('login-password');
    try {
      const r = await api.login(byPassword ? { user: user.value, password: password.value } : { token: token.value });
      token.value = '';
      password.value = '';
      loggedIn(r.user);
    } catch (err) {
      box.append(errorBox(err));
    }
  });
  for (const radio of document.querySelectorAll('input[name="mode"]')) {
    radio.addEventListener('change', () => {
      const byPassword = document.getElementById('login-mode-password').checked;
      document.getElementById('login-token-fields').hidden = byPassword;
      document.getElementById('login-password-fields').hidden = !byPassword;
      document.getElementById(byPassword ? 'login-user' : 'login-token').focus();
    });
  }
  document.getElementById('logout').addEventListener('click', async () => {
    try { await api.logout(); } catch (_) { /* the session is gone either way */ }
    ctx.user = null;
    showLogin(true);
  });
  const toggle = document.getElementById('menu-toggle');
  toggle.addEventListener('click', () => {
    const nav = document.getElementById('nav');
    nav.classList.toggle('open');
    toggle.setAttribute('aria-expanded', String(nav.classList.contains('open')));
  });
  window.addEventListener('hashchange', () => { if (ctx.user) render(); });
  try {
    const r = await api.session();
    loggedIn(r.user);
  } catch (_) {
    showLogin(true);
  }
}

function loggedIn(user) {
  ctx.user = user;
  document.getElementById('who').textContent = `${user.name}${user.admin ? ' (admin)' : ''}`;
  showLogin(false);
  render();
}

start();
