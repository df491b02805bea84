// "My quotas and usage": what the signed-in user has in use against their effective limits.

import { Me, Quotas, QuotaUsage } from '../lib/api';
import { h } from '../lib/dom';

const ROWS: [keyof Quotas, keyof QuotaUsage, string][] = [
  ['max_sessions', 'sessions', 'Sessions'],
  ['max_vcpus', 'vcpus', 'vCPUs'],
  ['max_memory_mib', 'memory_mib', 'Memory (MiB)'],
  ['agent_runs_per_day', 'agent_runs_today', 'Agent runs today'],
];

export function quotasBlock(me: Me, id?: string): HTMLElement {
  return h(
    'section',
    { class: 'acct-quotas', id },
    h('h3', null, 'My quotas and usage'),
    me.bootstrap ? h('p', { class: 'muted' }, 'The server token has no quotas.') : null,
    ROWS.map(([q, u, label]) => {
      const limit = me.quotas[q];
      const used = me.usage[u];
      const full = limit !== undefined && used >= limit;
      return h(
        'div',
        { class: `acct-quota${full ? ' full' : ''}`, dataset: { quota: q } },
        h('span', null, label),
        h('span', { class: 'mono' }, `${used} / ${limit ?? '∞'}`),
        limit ? h('div', { class: 'bar' }, h('div', { style: { width: `${Math.min(100, (used / limit) * 100)}%` } })) : null,
      );
    }),
  );
}
