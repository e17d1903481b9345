// The service registry: services of an environment with their instances (health, weight, drain state) and
// governance rules; operators take instances offline/online (publish level on the service).
import * as api from '../api.js';
import { h, table, field, select, link, stateBadge, badge, confirmDialog, errorBox, toast, clear, graphView } from '../ui.js';

export const page = {
  id: 'registry',
  title: 'Registry',
  nav: true,
  async render(view, params) {
    const envs = await api.get('/v1/envs');
    const env = params.env || envs[0];
    view.append(h('h1', {}, 'Service registry'));
    const envSel = select(envs, env, { id: 'registry-env' });
    envSel.addEventListener('change', () => { location.hash = link('registry', { env: envSel.value }); });
    view.append(field('Environment', envSel).el);
    const services = await api.get(`/v1/registry/${api.seg(env)}/services`);
    view.append(table({
      id: 'services-table', caption: `Services in ${env}`, rows: services, empty: 'No service registered.',
      columns: [
        { key: 'name', label: 'Service', value: (s) => s.service.name, render: (s) => h('a', { href: link('registry', { env, service: s.service.name }) }, s.service.name) },
        { key: 'app', label: 'Application', value: (s) => s.service.app },
        { key: 'owner', label: 'Owner', value: (s) => s.service.owner },
        { key: 'live', label: 'Live', value: (s) => (s.service.live ? 'live' : 'not live'), render: (s) => badge(s.service.live ? 'live' : 'not live', s.service.live ? 'ok' : 'warn') },
        { key: 'instances', label: 'Instances', num: true },
        { key: 'healthy', label: 'Healthy', num: true },
      ],
    }));
    // The declared dependencies as a graph (a dependency that is not registered here is drawn dashed).
    const known = new Set(services.map((s) => s.service.name));
    const edges = services.flatMap((s) => (s.service.dependencies || []).map((d) => [s.service.name, d]));
    if (edges.length > 0) {
      const missing = [...new Set(edges.map((e) => e[1]).filter((d) => !known.has(d)))];
      view.append(h('h2', {}, 'Dependencies'), h('div', { id: 'deps-graph' }, graphView({
        title: `Declared dependencies in ${env}`,
        nodes: [...services.map((s) => ({ id: s.service.name, label: s.service.name })), ...missing.map((d) => ({ id: d, label: d, kind: 'missing' }))],
        edges,
      })));
    }
    if (!params.service) return;
    const detail = h('section', { class: 'card', 'aria-labelledby': 'svc-title' });
    view.append(detail);
    const svcPath = `/v1/registry/${api.seg(env)}/services/${api.seg(params.service)}`;
    const draw = async () => {
      clear(detail);
      const s = await api.get(svcPath);
      detail.append(h('h2', { id: 'svc-title' }, `${s.service.name} (${s.service.app})`));
      if (s.service.docs) detail.append(h('p', {}, s.service.docs));
      if ((s.service.dependencies || []).length) detail.append(h('p', { class: 'muted' }, `Depends on: ${s.service.dependencies.join(', ')}`));
      detail.append(table({
        id: 'reg-instances-table', caption: 'Instances', rows: s.instances, empty: 'No instance.',
        columns: [
          { key: 'id', label: 'Instance' }, { key: 'addr', label: 'Address', value: (i) => `${i.ip}:${i.port}` },
          { key: 'version', label: 'Version' }, { key: 'weight', label: 'Weight', num: true },
          { key: 'healthy', label: 'Health', value: (i) => (i.healthy ? 'healthy' : 'down'), render: (i) => stateBadge(i.healthy ? 'healthy' : 'down') },
          { key: 'enabled', label: 'Traffic', value: (i) => (i.enabled ? 'online' : 'offline'), render: (i) => h('span', { class: 'row' }, stateBadge(i.enabled ? 'up' : 'offline'),
            h('button', { type: 'button', 'aria-label': `${i.enabled ? 'Take offline' : 'Put online'} ${i.id}`, onclick: async () => {
              const what = i.enabled ? 'offline' : 'online';
              if (!(await confirmDialog(`${what === 'offline' ? 'Drain' : 'Put online'} instance ${i.id} of ${s.service.name}?`, what))) return;
              try { await api.post(`${svcPath}/instances/${api.seg(i.id)}/${what}`); toast(`${i.id} ${what}`); draw(); } catch (e) { detail.prepend(errorBox(e)); }
            } }, i.enabled ? 'Offline' : 'Online')) },
          { key: 'tags', label: 'Tags', value: (i) => Object.entries(i.tags || {}).map(([k, v]) => `${k}=${v}`).join(', ') },
        ],
      }));
      detail.append(h('h3', {}, 'Governance rules'));
      try {
        const rules = await api.get(`${svcPath}/rules`);
        detail.append(h('pre', { id: 'reg-rules' }, JSON.stringify(rules, null, 2)));
      } catch (e) { detail.append(errorBox(e)); }
    };
    await draw();
  },
};
