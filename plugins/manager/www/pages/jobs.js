// Jobs: the long operations (service creation and refresh, instance starts). Rows follow the
// job.progress and job.done events directly: each event carries the whole job.

import { el, busy, errorBox, showError, clearError, table, loader, actionButton, jobError } from '../ui.js';

const COLUMNS = ['Job', 'Kind', 'Subject', 'State', 'Progress', 'Message', ''];

// job-12 after job-9: newest first.
function jobNumber(id) {
  const n = /(\d+)$/.exec(id || '');
  return n ? Number(n[1]) : 0;
}

export function mount(root, ctx) {
  const api = ctx.api;
  const errors = errorBox('jobs-error');
  const list = table('jobs-table', COLUMNS);
  const empty = el('p', { class: 'empty-state', hidden: true }, 'No jobs yet.');
  const head = el('header', { class: 'page-head' }, el('h1', {}, 'Jobs'),
    el('p', { class: 'muted' }, 'Long operations, running and recently finished.'));
  root.append(head, errors, list.wrap, empty);

  const reload = loader(() => api.get('/manager/api/jobs'), (data) => {
    const jobs = merge(data.jobs || []).sort((a, b) => jobNumber(b.job_id) - jobNumber(a.job_id));
    list.tbody.replaceChildren(...jobs.map(row));
    empty.hidden = jobs.length !== 0;
  }, (e) => showError(errors, e, head));

  // Events may have overtaken the list while it was on its way: keep whichever is further along.
  function merge(listed) {
    const newest = Math.max(0, ...listed.map((j) => jobNumber(j.job_id)));
    const seen = new Set(listed.map((j) => j.job_id));
    const merged = listed.map((j) => {
      const live = ctx.jobs.get(j.job_id);
      if (!live) return j;
      const ahead = live.state !== 'running' || (j.state === 'running' && live.progress >= j.progress);
      return ahead ? live : j;
    });
    for (const live of ctx.jobs.values()) {
      if (!seen.has(live.job_id) && jobNumber(live.job_id) > newest) merged.push(live);
    }
    return merged;
  }

  function row(job) {
    const tr = el('tr', { 'data-id': job.job_id },
      el('td', { class: 'id mono' }, job.job_id),
      el('td', { class: 'kind' }, job.kind || ''),
      el('td', { class: 'subject' }, job.subject || ''),
      el('td', { class: 'state' }),
      el('td', { class: 'progress' }, el('progress', { max: '1', value: '0' })),
      el('td', { class: 'message' }),
      el('td', { class: 'buttons' }));
    update(tr, job);
    return tr;
  }

  /** Refresh a row in place, so the progress bar moves instead of being redrawn. */
  function update(tr, job) {
    const state = tr.querySelector('td.state');
    state.textContent = job.state;
    state.className = 'state state-' + job.state;
    tr.querySelector('progress').value = Number(job.progress) || 0;
    tr.querySelector('td.message').textContent = job.state === 'failed' ? jobError(job) : (job.message || '');
    const buttons = tr.querySelector('td.buttons');
    if (job.state === 'running') {
      if (!buttons.querySelector('[data-action="cancel"]')) buttons.replaceChildren(cancelButton(job.job_id));
    } else {
      buttons.replaceChildren();
    }
  }

  function cancelButton(id) {
    const b = actionButton('Cancel', 'cancel', { class: 'secondary small' });
    b.addEventListener('click', () => busy(b, async () => {
      clearError(errors);
      try {
        await api.post(`/manager/api/jobs/${encodeURIComponent(id)}/cancel`, {});
        ctx.toast(`Cancel requested for ${id}`);
      } catch (e) {
        showError(errors, e, head);
      }
    }));
    return b;
  }

  ctx.on('job.*', (job) => {
    if (!job || !job.job_id) return;
    const tr = list.tbody.querySelector(`tr[data-id="${CSS.escape(job.job_id)}"]`);
    if (tr) update(tr, job);
    else list.tbody.prepend(row(job));
    empty.hidden = true;
  });
  ctx.on('resync', reload);
  reload();
}
