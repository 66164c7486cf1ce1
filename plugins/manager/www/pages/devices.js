// Devices: pair a device (its key is shown once), revoke its authorization, or unpair it.
// The time left is recomputed each second in the browser; the server is only asked on events.

import {
  el, field, busy, errorBox, showError, clearError, table, fillRows, loader, formValues,
  formatTime, formatTimeLeft, actionButton,
} from '../ui.js';

const COLUMNS = ['Device', 'Type', 'State', 'Time left', 'Authorized since', 'Instances', ''];

export function mount(root, ctx) {
  const api = ctx.api;
  const errors = errorBox('devices-error');
  const key = el('code', { id: 'device-key', class: 'secret' });
  const keyBox = el('div', { class: 'once', hidden: true },
    el('p', {}, 'The device\'s key. Give it to the device now: it will not be shown again.'), key);
  const form = el('form', { id: 'device-pair-form', class: 'inline-form', novalidate: true },
    field('Device id', { name: 'device_id', required: true, maxlength: 128, autocomplete: 'off' }),
    field('Authorized for (seconds)', { name: 'duration_s', type: 'number', min: 1, value: '3600', required: true },
      '3600 = one hour'),
    el('div', { class: 'actions' }, el('button', { type: 'submit' }, 'Pair device')));
  const list = table('devices-table', COLUMNS);
  const head = el('header', { class: 'page-head' }, el('h1', {}, 'Devices'),
    el('p', { class: 'muted' }, 'Mobile devices and cloudlets allowed to start instances here.'));

  root.append(head, errors, list.wrap,
    el('section', { class: 'card' }, el('h2', {}, 'Pair a device'), form, keyBox));

  const reload = loader(() => api.get('/manager/api/devices'), (data) => {
    fillRows(list.tbody, (data.devices || []).map(row), 'No paired devices.', COLUMNS.length);
    tick();
  }, (e) => showError(errors, e, head));

  function row(d) {
    const tr = el('tr', { 'data-id': d.device_id },
      el('td', { class: 'device' }, d.device_id,
        d.connection_id ? el('div', { class: 'muted small mono' }, d.connection_id) : null),
      el('td', { class: 'type' }, d.type || ''),
      el('td', { class: 'state state-' + d.state }, d.state),
      el('td', { class: 'time-left' }),
      el('td', { class: 'since' }, formatTime(d.auth_start_ms)),
      el('td', { class: 'instances' }, (d.instances || []).length ? d.instances.join(', ') : '—'),
      el('td', { class: 'buttons' },
        d.state === 'ok' ? rowButton('Revoke', 'revoke', 'secondary', () => revoke(d.device_id)) : null,
        rowButton('Unpair', 'unpair', 'danger', () => unpair(d.device_id))));
    tr.dataset.end = String(d.auth_end_ms || 0);
    tr.dataset.state = d.state;
    return tr;
  }

  // The time-left cells, from the server's clock as the live events tell it.
  function tick() {
    const now = ctx.serverNow();
    for (const tr of list.tbody.querySelectorAll('tr[data-id]')) {
      const cell = tr.querySelector('td.time-left');
      if (tr.dataset.state === 'revoked') cell.textContent = 'revoked';
      else cell.textContent = formatTimeLeft(Number(tr.dataset.end) - now);
    }
  }

  function rowButton(label, action, kind, work) {
    const b = actionButton(label, action, { class: kind + ' small' });
    b.addEventListener('click', () => busy(b, async () => {
      clearError(errors);
      try {
        await work();
        reload();
      } catch (e) {
        showError(errors, e, head);
      }
    }));
    return b;
  }

  async function revoke(id) {
    await api.post(`/manager/api/devices/${encodeURIComponent(id)}/revoke`, {});
    ctx.toast(`Device ${id} revoked`);
  }

  async function unpair(id) {
    await api.del('/manager/api/devices/' + encodeURIComponent(id));
    ctx.toast(`Device ${id} unpaired`);
  }

  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const v = formValues(form);
    const actions = form.querySelector('.actions');
    busy(form.querySelector('button[type="submit"]'), async () => {
      clearError(errors);
      try {
        const paired = await api.post('/manager/api/devices', {
          device_id: v.device_id, duration_s: Number(v.duration_s || 3600),
        });
        key.textContent = paired.device_key || '';
        keyBox.hidden = false;
        form.elements.device_id.value = '';
        ctx.toast(`Device ${paired.device_id || v.device_id} paired`);
        reload();
      } catch (e) {
        showError(errors, e, actions);
      }
    });
  });

  reload();
  ctx.every(1000, tick);
  ctx.on('device.changed', reload);
  ctx.on('resync', reload);
}
