// Services: the guest images instances start from. Create, edit, refresh (rebuild the saved
// state), delete, and start an instance; long actions run as jobs whose progress shows here.

import {
  el, field, busy, errorBox, showError, clearError, table, fillRows, loader, formValues,
  parseTags, putNumbers, formatMiB, actionButton, jobLine, jobError,
} from '../ui.js';

const COLUMNS = ['Service', 'Description', 'Tags', 'Port', 'Memory', 'Users', 'State saved', 'Instances', ''];

export function mount(root, ctx) {
  const api = ctx.api;
  const byId = new Map();
  const errors = errorBox('services-error');
  const search = el('input', {
    id: 'services-search', type: 'search', placeholder: 'Filter by id, description or tag',
    'aria-label': 'Filter services', autocomplete: 'off',
  });
  const toolbar = el('div', { class: 'toolbar' }, search);
  const jobs = el('ul', { class: 'job-list', 'aria-label': 'Service jobs' });
  const createJobs = el('ul', { class: 'job-list', 'aria-label': 'New service jobs' });
  const services = table('services-table', COLUMNS);
  const editForm = buildEditForm();
  const createForm = buildCreateForm();

  root.append(
    el('header', { class: 'page-head' }, el('h1', {}, 'Services'),
      el('p', { class: 'muted' }, 'Guest images that devices start instances of.')),
    toolbar, errors, jobs, editForm, services.wrap,
    el('section', { class: 'card' }, el('h2', {}, 'Add a service'), createForm, createJobs),
  );

  // ---- the list -----------------------------------------------------------------------------

  const reload = loader(() => api.get('/manager/api/services'), (data) => {
    const list = data.services || [];
    byId.clear();
    for (const s of list) byId.set(s.service_id, s);
    fillRows(services.tbody, list.map(row), 'No services yet: add one below.', COLUMNS.length);
    filter();
  }, (e) => showError(errors, e, toolbar));

  function row(s) {
    const tr = el('tr', { 'data-id': s.service_id },
      el('td', { class: 'id' }, el('strong', {}, s.service_id), s.version ? el('div', { class: 'muted small' }, s.version) : null),
      el('td', { class: 'description' }, s.description || ''),
      el('td', { class: 'tags' }, (s.tags || []).map((t) => el('span', { class: 'tag' }, t))),
      el('td', { class: 'port num' }, String(s.port)),
      el('td', { class: 'memory' }, `${formatMiB(s.min_memory)} / ${formatMiB(s.ideal_memory)}`),
      el('td', { class: 'users num' }, String(s.num_users)),
      el('td', { class: 'state-saved' }, s.state_saved ? 'yes' : 'no'),
      el('td', { class: 'instances num' }, String(s.instances)),
      el('td', { class: 'buttons' },
        rowButton('Start', 'start', '', () => startInstance(s.service_id)),
        rowButton('Edit', 'edit', 'secondary', () => openEdit(s.service_id)),
        rowButton('Refresh', 'refresh', 'secondary', () => refresh(s.service_id)),
        rowButton('Delete', 'delete', 'danger', () => remove(s.service_id))));
    return tr;
  }

  function rowButton(label, action, kind, work) {
    const button = actionButton(label, action, { class: kind ? kind + ' small' : 'small' });
    button.addEventListener('click', () => busy(button, async () => {
      clearError(errors);
      try {
        await work();
      } catch (e) {
        showError(errors, e, toolbar);
      }
    }));
    return button;
  }

  function filter() {
    const words = search.value.trim().toLowerCase().split(/\s+/).filter(Boolean);
    for (const tr of services.tbody.querySelectorAll('tr[data-id]')) {
      const s = byId.get(tr.dataset.id);
      const text = s ? [s.service_id, s.description, ...(s.tags || [])].join(' ').toLowerCase() : '';
      tr.hidden = !words.every((w) => text.includes(w));
    }
  }
  search.addEventListener('input', filter);

  // ---- actions ------------------------------------------------------------------------------

  function watch(jobId, label, onFailAnchor, onDone, list = jobs) {
    list.append(jobLine(ctx, jobId, label, (job) => {
      reload();
      if (job.state === 'failed') showError(errors, new Error(`${label}: ${jobError(job)}`), onFailAnchor);
      else if (job.state === 'done' && onDone) onDone(job);
    }));
  }

  async function startInstance(id) {
    const { job_id } = await api.post('/manager/api/instances', { service_id: id, wait: false });
    watch(job_id, `Starting an instance of ${id}`, toolbar, () => ctx.toast(`An instance of ${id} is running`));
  }

  async function refresh(id) {
    const { job_id } = await api.post(`/manager/api/services/${encodeURIComponent(id)}/refresh`, { wait: false });
    watch(job_id, `Refreshing ${id}`, toolbar, () => ctx.toast(`${id} refreshed`));
  }

  async function remove(id) {
    if (!window.confirm(`Delete the service ${id}? Its image and saved state go too.`)) return;
    await api.del('/manager/api/services/' + encodeURIComponent(id));
    ctx.toast(`Service ${id} deleted`);
    if (editForm.dataset.id === id) editForm.hidden = true;
    reload();
  }

  // ---- edit ---------------------------------------------------------------------------------

  function buildEditForm() {
    const form = el('form', { id: 'service-edit-form', class: 'card edit-form', hidden: true, novalidate: true },
      el('h2', {}, 'Edit ', el('span', { class: 'edit-id' })),
      el('div', { class: 'form-grid' },
        field('Description', { name: 'description', maxlength: 4096 }),
        field('Version', { name: 'version', maxlength: 128 }),
        field('Tags', { name: 'tags' }, 'comma separated'),
        field('Users', { name: 'num_users', type: 'number', min: 0, max: 100000 }),
        field('Minimum memory (MiB)', { name: 'min_memory', type: 'number', min: 0 }, '0: the default'),
        field('Ideal memory (MiB)', { name: 'ideal_memory', type: 'number', min: 0 }, '0: the default')),
      el('div', { class: 'actions' },
        el('button', { type: 'submit' }, 'Save'),
        el('button', { type: 'button', class: 'secondary', 'data-action': 'cancel-edit' }, 'Cancel')));
    form.querySelector('[data-action="cancel-edit"]').addEventListener('click', () => { form.hidden = true; });
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      const id = form.dataset.id;
      const v = formValues(form);
      const body = { description: v.description, version: v.version, tags: parseTags(v.tags) };
      putNumbers(body, v, ['num_users', 'min_memory', 'ideal_memory']);
      busy(form.querySelector('button[type="submit"]'), async () => {
        clearError(errors);
        try {
          const s = await api.post('/manager/api/services/' + encodeURIComponent(id), body);
          const updated = s && s.service_id ? s : { ...byId.get(id), ...body };
          byId.set(id, updated);
          const old = services.tbody.querySelector(`tr[data-id="${CSS.escape(id)}"]`);
          if (old) old.replaceWith(row(updated));
          filter();
          form.hidden = true;
          ctx.toast(`Service ${id} saved`);
        } catch (e) {
          showError(errors, e, form.querySelector('.actions'));
        }
      });
    });
    return form;
  }

  function openEdit(id) {
    const s = byId.get(id);
    if (!s) return;
    const f = editForm.elements;
    editForm.dataset.id = id;
    editForm.querySelector('.edit-id').textContent = id;
    f.description.value = s.description || '';
    f.version.value = s.version || '';
    f.tags.value = (s.tags || []).join(', ');
    f.num_users.value = s.num_users;
    f.min_memory.value = s.min_memory;
    f.ideal_memory.value = s.ideal_memory;
    editForm.hidden = false;
    editForm.scrollIntoView({ block: 'nearest' });
    f.description.focus({ preventScroll: true });
  }

  // ---- create -------------------------------------------------------------------------------

  function buildCreateForm() {
    // novalidate: the server checks the fields and its error text is the one to show.
    const form = el('form', { id: 'service-form', novalidate: true },
      el('div', { class: 'form-grid' },
        field('Service id', { name: 'service_id', required: true, maxlength: 128, autocomplete: 'off' },
          'letters, digits, . _ -'),
        field('Description', { name: 'description', maxlength: 4096 }),
        field('Version', { name: 'version', maxlength: 128 }),
        field('Tags', { name: 'tags' }, 'comma separated'),
        field('Port in the guest', { name: 'port', type: 'number', min: 1, max: 65535, required: true }),
        field('Users', { name: 'num_users', type: 'number', min: 0, max: 100000 }),
        field('Minimum memory (MiB)', { name: 'min_memory', type: 'number', min: 0 }),
        field('Ideal memory (MiB)', { name: 'ideal_memory', type: 'number', min: 0 })),
      el('fieldset', {},
        el('legend', {}, 'Boot from a disk image, or from a kernel'),
        el('div', { class: 'form-grid' },
          field('Disk image', { name: 'disk_image', placeholder: 'images/service.qcow2' }, 'qcow2 inside the data directory'),
          field('Kernel', { name: 'kernel' }),
          field('Initrd', { name: 'initrd' }, 'with a kernel, optional'),
          field('Kernel command line', { name: 'cmdline' }, 'with a kernel, optional'))),
      el('div', { class: 'actions' }, el('button', { type: 'submit' }, 'Add service')));

    form.addEventListener('submit', (event) => {
      event.preventDefault();
      const v = formValues(form);
      const body = {
        service_id: v.service_id, description: v.description, version: v.version,
        tags: parseTags(v.tags), port: Number(v.port), wait: false,
      };
      putNumbers(body, v, ['num_users', 'min_memory', 'ideal_memory']);
      for (const name of ['disk_image', 'kernel', 'initrd', 'cmdline']) if (v[name]) body[name] = v[name];
      const actions = form.querySelector('.actions');
      busy(form.querySelector('button[type="submit"]'), async () => {
        clearError(errors);
        try {
          const { job_id } = await api.post('/manager/api/services', body);
          form.reset();
          watch(job_id, `Adding ${body.service_id}`, actions, () => ctx.toast(`Service ${body.service_id} added`), createJobs);
        } catch (e) {
          showError(errors, e, actions);
        }
      });
    });
    return form;
  }

  reload();
  ctx.on('service.changed', reload);
  ctx.on('instance.state', reload); // the instances column
  ctx.on('resync', reload);
}
