// Cloudlets: the other cloudlets found on the local network (mDNS), as they come and go.

import { el, errorBox, showError, table, loader } from '../ui.js';

const COLUMNS = ['Name', 'Host', 'Addresses', 'Port', 'Encryption', 'Interface'];

export function mount(root, ctx) {
  const errors = errorBox('peers-error');
  const list = table('peers-table', COLUMNS);
  const empty = el('p', { class: 'empty-state', hidden: true },
    'No other cloudlets found on the local network yet. They appear here as they announce themselves.');
  const head = el('header', { class: 'page-head' }, el('h1', {}, 'Cloudlets'),
    el('p', { class: 'muted' }, 'Other cloudlets nearby.'));
  root.append(head, errors, list.wrap, empty);

  const reload = loader(() => ctx.api.get('/manager/api/peers'), (data) => {
    const peers = data.peers || [];
    list.tbody.replaceChildren(...peers.map((p) => el('tr', { 'data-name': p.name },
      el('td', { class: 'name' }, p.name),
      el('td', { class: 'host' }, p.host || ''),
      el('td', { class: 'addresses' }, (p.addresses || []).join(', ')),
      el('td', { class: 'port num' }, String(p.port)),
      el('td', { class: 'encryption' }, p.encryption ? 'yes' : 'no'),
      el('td', { class: 'interface' }, p.interface || ''))));
    list.wrap.hidden = peers.length === 0;
    empty.hidden = peers.length !== 0;
  }, (e) => showError(errors, e, head));

  reload();
  ctx.on('peer.*', reload);
  ctx.on('resync', reload);
}
