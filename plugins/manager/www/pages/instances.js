// Instances: the running VMs. Start one of a service, stop, pause, resume, or force-stop it for
// every device. A row changes as soon as an instance.state event arrives, then the list is re-read.

import {
  el, busy, errorBox, showError, clearError, table, fillRows, loader, formatTime, actionButton,
  jobLine, jobError,
} from '../ui.js';

const COLUMNS = ['Service', 'Instance', 'State', 'Ports', 'Address', 'Users', 'Devices', 'Started', ''];
// Which actions make sense in which state.
const ACTIONS = {
  starting: ['kill'],
  running: ['pause', 'stop', 'kill'],
  paused: ['resume', 'stop', 'kill'],
  stopped: [],
};
const LABELS = { stop: 'Stop', pause: 'Pause', resume: 'Resume', kill: 'Force stop' };

export function mount(root, ctx) {
  const api = ctx.api;
  const instances = new Map(); // id -> Instance, in the order the server lists them
  const services = new Map(); // service_id -> Service (for its port inside the guest)
  const errors = errorBox('instances-error');
  const select = el('select', { name: 'service_id', required: true, 'aria-label': 'Service' });
  const startJobs = el('ul', { class: 'job-list', 'aria-label': 'Instance jobs' });
  const startForm = el('form', { id: 'instance-start-form', class: 'inline-form' },
    el('label', { class: 'field' }, el('span', {}, 'Service'), select),
    el('div', { class: 'actions' }, el('button', { type: 'submit' }, 'Start instance')));
  const list = table('instances-table', COLUMNS);
  const head = el('header', { class: 'page-head' }, el('h1', {}, 'Instances'),
    el('p', { class: 'muted' }, 'Virtual machines running services for devices.'));

  root.append(head, errors, list.wrap,
    el('section', { class: 'card' }, el('h2', {}, 'Start an instance'), startForm, startJobs));

  // ---- lists --------------------------------------------------------------------------------

  const reloadInstances = loader(() => api.get('/manager/api/instances'), (data) => {
    instances.clear();
    for (const i of data.instances || []) instances.set(i.id, i);
    render();
  }, (e) => showError(errors, e, head));

  const reloadServices = loader(() => api.get('/manager/api/services'), (data) => {
    services.clear();
    for (const s of data.services || []) services.set(s.service_id, s);
    fillSelect();
    render(); // the ports column shows the service's port
  }, (e) => showError(errors, e, startForm.querySelector('.actions')));

  function render() {
    fillRows(list.tbody, [...instances.values()].map(row), 'No instances are running.', COLUMNS.length);
  }

  function fillSelect() {
    const chosen = select.value;
    const options = [...services.keys()].sort().map((id) => el('option', { value: id }, id));
    if (!options.length) options.push(el('option', { value: '', disabled: true }, 'no services'));
    select.replaceChildren(...options);
    if (services.has(chosen)) select.value = chosen;
  }

  function ports(i) {
    if (!i.port) return '—';
    const service = services.get(i.service_id);
    const main = service ? `${service.port} → ${i.port}` : String(i.port);
    return i.ssh_port ? `${main}, ssh ${i.ssh_port}` : main;
  }

  function row(i) {
    const address = [i.ip_address, i.vnc_address ? 'VNC ' + i.vnc_address : ''].filter(Boolean).join(', ');
    const devices = Array.isArray(i.devices) && i.devices.length ? i.devices.join(', ') : '—';
    return el('tr', { 'data-id': i.id },
      el('td', { class: 'service' }, i.service_id),
      el('td', { class: 'name' }, i.name || '', el('div', { class: 'muted small mono' }, i.id)),
      el('td', { class: 'state state-' + i.state }, i.state),
      el('td', { class: 'ports' }, ports(i)),
      el('td', { class: 'address' }, address || '—'),
      el('td', { class: 'users num' }, i.users === undefined ? '' : String(i.users) + (i.shared ? ' (shared)' : '')),
      el('td', { class: 'devices' }, devices),
      el('td', { class: 'started' }, formatTime(i.started_ms),
        i.memory_restored ? el('div', { class: 'muted small' }, 'resumed saved state') : null),
      el('td', { class: 'buttons' }, (ACTIONS[i.state] || []).map((action) => button(i, action))));
  }

  function button(i, action) {
    const b = actionButton(LABELS[action], action, { class: (action === 'kill' ? 'danger' : 'secondary') + ' small' });
    b.addEventListener('click', () => busy(b, async () => {
      clearError(errors);
      const path = '/manager/api/instances/' + encodeURIComponent(i.id);
      try {
        if (action === 'kill') {
          if (!window.confirm(`Stop the instance of ${i.service_id} for every device using it?`)) return;
          await api.del(path);
          ctx.toast(`Instance of ${i.service_id} stopped`);
        } else {
          const answer = await api.post(`${path}/${action}`, {});
          if (action === 'stop' && answer && answer.stopped === false) {
            ctx.toast(`Still in use by ${answer.users} device(s): the instance keeps running`);
          }
        }
        reloadInstances();
      } catch (e) {
        showError(errors, e, head);
      }
    }));
    return b;
  }

  // ---- start --------------------------------------------------------------------------------

  startForm.addEventListener('submit', (event) => {
    event.preventDefault();
    const serviceId = select.value;
    const actions = startForm.querySelector('.actions');
    busy(startForm.querySelector('button[type="submit"]'), async () => {
      clearError(errors);
      try {
        const { job_id } = await api.post('/manager/api/instances', { service_id: serviceId, wait: false });
        startJobs.append(jobLine(ctx, job_id, `Starting ${serviceId}`, (job) => {
          if (job.state === 'failed') showError(errors, new Error(`Starting ${serviceId}: ${jobError(job)}`), actions);
          reloadInstances();
        }));
      } catch (e) {
        showError(errors, e, actions);
      }
    });
  });

  // ---- live ---------------------------------------------------------------------------------

  ctx.on('instance.state', (event) => {
    if (!event || !event.id) return;
    // Show the new state at once; the re-read fills in (or removes) the rest.
    const known = instances.get(event.id) || { id: event.id, service_id: event.service_id, name: '' };
    instances.set(event.id, { ...known, state: event.state });
    render();
    reloadInstances();
  });
  ctx.on('service.changed', reloadServices);
  ctx.on('device.changed', reloadInstances);
  ctx.on('resync', () => { reloadServices(); reloadInstances(); });

  reloadServices();
  reloadInstances();
}
