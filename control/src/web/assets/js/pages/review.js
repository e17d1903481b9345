// The review queue: namespace instances of one environment whose namespace needs review and whose draft
// differs from the current release. Open one to see its diff and publish it (the API refuses a publish by
// whoever edited the draft: 403 review_required).
import * as api from '../api.js';
import { h, table, field, select, link } from '../ui.js';

const MAX_CHECKED = 200;

export const page = {
  id: 'review',
  title: 'Review queue',
  nav: true,
  async render(view, params) {
    const envs = await api.get('/v1/envs');
    const env = params.env || envs[0];
    view.append(h('h1', {}, 'Review queue'));
    const envSel = select(envs, env, { id: 'review-env' });
    envSel.addEventListener('change', () => { location.hash = link('review', { env: envSel.value }); });
    view.append(field('Environment', envSel).el);
    const rows = [];
    let checked = 0;
    for (const a of await api.get('/v1/apps')) {
      const [clusters, namespaces] = await Promise.all([
        api.get(`/v1/apps/${api.seg(a.name)}/envs/${api.seg(env)}/clusters`),
        api.get(`/v1/apps/${api.seg(a.name)}/namespaces`),
      ]);
      for (const n of namespaces.filter((x) => x.review && x.app === a.name)) {
        for (const c of clusters) {
          if (++checked > MAX_CHECKED) break;
          const ns = { app: a.name, env, cluster: c, ns: n.name };
          try {
            const d = await api.get(`${api.nsPath(ns)}/diff`);
            const changes = Object.keys(d.added || {}).length + Object.keys(d.removed || {}).length + Object.keys(d.changed || {}).length;
            if (changes > 0) rows.push({ ...ns, changes });
          } catch (_) { /* no read permission there: not in this user's queue */ }
        }
      }
    }
    view.append(table({
      id: 'review-table', caption: `Drafts waiting for review in ${env}`, rows, empty: 'Nothing waits for review.',
      columns: [
        { key: 'app', label: 'Application' }, { key: 'cluster', label: 'Cluster' },
        { key: 'ns', label: 'Namespace', render: (r) => h('a', { href: link('config', { app: r.app, env: r.env, cluster: r.cluster, ns: r.ns, tab: 'publish' }) }, r.ns) },
        { key: 'changes', label: 'Changed keys', num: true },
      ],
    }));
    if (checked > MAX_CHECKED) view.append(h('p', { class: 'muted' }, `Only the first ${MAX_CHECKED} namespace instances were checked.`));
  },
};
