// Small DOM helpers shared by the pages. Everything from the server goes in as text
// (textContent / attributes), never as HTML.

/** el('td', { class: 'state', 'data-id': id }, 'running', otherNode) */
export function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === false || value === null || value === undefined) continue;
    if (key === 'class') node.className = value;
    else if (value === true) node.setAttribute(key, '');
    else node.setAttribute(key, String(value));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(node, child);
    else node.append(child instanceof Node ? child : String(child));
  }
}

/** A labelled form field: <label><span>Label</span><input ...></label>. */
export function field(label, attrs, hint) {
  const input = el(attrs.tag || 'input', { ...attrs, tag: undefined });
  return el('label', { class: 'field' }, el('span', {}, label), input, hint ? el('small', {}, hint) : null);
}

/** A button that runs one request at a time (disabled meanwhile). */
export function actionButton(label, action, attrs) {
  return el('button', { type: 'button', 'data-action': action, ...attrs }, label);
}

/** Run work() with the button disabled, so a second click cannot send a second request. */
export async function busy(button, work) {
  if (button) {
    button.disabled = true;
    button.setAttribute('aria-busy', 'true');
  }
  try {
    return await work();
  } finally {
    if (button) {
      button.disabled = false;
      button.removeAttribute('aria-busy');
    }
  }
}

/** A page's error line (kept empty and hidden until an action fails). */
export function errorBox(id) {
  return el('p', { id, class: 'error', role: 'alert', hidden: true });
}

/** Show err's text; anchor (optional) moves the box next to where the operator acted. */
export function showError(box, err, anchor) {
  if (anchor && anchor !== box) anchor.after(box);
  box.textContent = err && err.message ? err.message : String(err);
  box.hidden = false;
}

export function clearError(box) {
  box.textContent = '';
  box.hidden = true;
}

/** A scrollable table: narrow screens scroll it sideways instead of squeezing the columns. */
export function table(id, columns) {
  const tbody = el('tbody');
  const tableNode = el('table', { id },
    el('thead', {}, el('tr', {}, columns.map((c) => el('th', { scope: 'col' }, c)))), tbody);
  const wrap = el('div', { class: 'table-wrap' }, tableNode);
  return { wrap, table: tableNode, tbody };
}

/** Replace the rows of tbody, with an empty-state row when there are none. */
export function fillRows(tbody, rows, emptyText, columns) {
  if (rows.length) tbody.replaceChildren(...rows);
  else tbody.replaceChildren(el('tr', { class: 'empty' }, el('td', { colspan: columns }, emptyText)));
}

/** Latest-wins loader: a slow older answer never overwrites a newer one. */
export function loader(load, apply, onError) {
  let sequence = 0;
  return async () => {
    const mine = ++sequence;
    try {
      const data = await load();
      if (mine === sequence) apply(data);
    } catch (e) {
      if (mine === sequence && onError) onError(e);
    }
  };
}

export function formatBytes(bytes) {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = Number(bytes) || 0;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return (unit === 0 ? value.toFixed(0) : value.toFixed(1)) + ' ' + units[unit];
}

export function formatMiB(mib) {
  return mib ? formatBytes(mib * 1024 * 1024) : 'default';
}

export function formatTime(ms) {
  return ms ? new Date(ms).toLocaleString() : '—';
}

/** "45 s", "59 min", "3 h 5 min", "2 d 4 h", or "expired". */
export function formatTimeLeft(ms) {
  if (ms <= 0) return 'expired';
  const s = Math.floor(ms / 1000);
  if (s < 60) return s + ' s';
  const m = Math.floor(s / 60);
  if (m < 60) return m + ' min';
  const h = Math.floor(m / 60);
  if (h < 48) return h + ' h ' + (m % 60) + ' min';
  return Math.floor(h / 24) + ' d ' + (h % 24) + ' h';
}

/** Form values as trimmed strings. */
export function formValues(form) {
  const values = {};
  for (const [key, value] of new FormData(form)) values[key] = String(value).trim();
  return values;
}

export function parseTags(text) {
  return String(text || '').split(',').map((t) => t.trim()).filter(Boolean);
}

/** Copy numbers that were filled in (blank fields are left to the server's defaults). */
export function putNumbers(target, values, names) {
  for (const name of names) {
    if (values[name] !== undefined && values[name] !== '') target[name] = Number(values[name]);
  }
}

/**
 * A line that follows one job's progress from the live events. ctx.jobs holds the latest
 * state of every job seen, so a job that finished before its POST answered still shows.
 */
export function jobLine(ctx, jobId, label, onFinish) {
  const bar = el('progress', { max: '1', value: '0' });
  const note = el('span', { class: 'job-note' });
  const state = el('span', { class: 'badge' }, 'running');
  const dismiss = el('button', { type: 'button', class: 'link', 'aria-label': 'Dismiss', hidden: true }, '×');
  const line = el('li', { class: 'job', 'data-job': jobId }, el('span', { class: 'job-label' }, label), bar, state, note, dismiss);
  let finished = false;
  const off = ctx.on('job.*', (job) => { if (job.job_id === jobId) show(job); });
  dismiss.addEventListener('click', () => line.remove());

  function show(job) {
    if (finished) return;
    bar.value = Number(job.progress) || 0;
    note.textContent = job.message || '';
    state.textContent = job.state;
    state.className = 'badge state-' + job.state;
    if (job.state !== 'running') {
      finished = true;
      off();
      dismiss.hidden = false;
      if (job.state === 'done') setTimeout(() => line.remove(), 8000);
      if (onFinish) onFinish(job);
    }
  }

  if (ctx.jobs.has(jobId)) show(ctx.jobs.get(jobId));
  // One look in case the live stream is paused: events may never come.
  ctx.api.get('/manager/api/jobs/' + encodeURIComponent(jobId)).then(show, () => {});
  return line;
}

/** Why a job failed, in words: its message, or the error it answered. */
export function jobError(job) {
  if (job.result && typeof job.result.error === 'string') return job.result.error;
  return job.message || ('the job ' + job.state);
}
