// The proxy fleet: every proxy reporting to the center (furrow proxy --config-source), with the releases
// and config version it runs and the admin address the console reaches it at.
import * as api from '../api.js';
import { h, table, stateBadge, when, link } from '../ui.js';

/** The proxy's own config generation, asked from its admin port (only for the rows shown). */
function generation(p) {
  const cell = h('span', { class: 'muted' }, p.admin ? '…' : '-');
  if (p.admin) {
    const path = p.key.split('/').map(api.seg).join('/');
    api.get(`/console/api/proxies/${path}/info`)
      .then((r) => { cell.textContent = (r.info.Server || {}).config_generation || '?'; cell.className = ''; })
      .catch((e) => { cell.textContent = e.code === 'bad_gateway' ? 'unreachable' : e.code; });
  }
  return cell;
}

export const page = {
  id: 'proxies',
  title: 'Proxies',
  nav: true,
  async render(view, _params, ctx) {
    view.append(h('h1', {}, 'Proxy fleet'));
    view.append(h('p', { class: 'muted' }, 'Proxies that take their configuration from this center and report what they run. The list refreshes every 5 s.'));
    const holder = h('div', {});
    view.append(holder);
    const draw = async () => {
      const list = await api.get('/console/api/proxies');
      holder.replaceChildren(table({
        id: 'proxies-table', caption: 'Proxies', rows: list, empty: 'No proxy reports to this center.',
        columns: [
          { key: 'id', label: 'Instance', value: (p) => p.report.id, render: (p) => h('a', { href: link('proxy', { key: p.key }), class: 'proxy-link' }, p.report.id) },
          { key: 'where', label: 'Config from', value: (p) => `${p.report.app}/${p.report.env}/${p.report.cluster}/${p.report.namespace}` },
          { key: 'ip', label: 'IP', value: (p) => p.report.ip },
          { key: 'releases', label: 'Releases', value: (p) => p.report.releases.join(', ') },
          { key: 'version', label: 'Config version', num: true, value: (p) => p.report.version },
          { key: 'generation', label: 'Generation', value: () => '', render: generation },
          { key: 'status', label: 'Status', value: (p) => p.report.status, render: (p) => h('span', {}, stateBadge(p.report.status || 'applied'), p.report.reason ? ` ${p.report.reason}` : '') },
          { key: 'admin', label: 'Admin', value: (p) => p.admin || p.admin_error || '' },
          { key: 'at', label: 'Last report', value: (p) => when(p.report.at_ms) },
        ],
      }));
    };
    await draw();
    ctx.every(5000, () => draw().catch(() => {}));
  },
};
