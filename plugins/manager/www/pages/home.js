// Home: what this cloudlet is, its load over the last five minutes, and the operator's settings
// (API tokens, password).

import { createChart, drawChart } from '../chart.js';
import {
  el, field, busy, errorBox, showError, clearError, table, fillRows, loader, formValues,
  formatBytes, formatTime, actionButton,
} from '../ui.js';

export function mount(root, ctx) {
  const name = el('h1', { id: 'home-name' }, '…');
  const info = el('dl', { id: 'home-info', class: 'facts' });
  const homeError = errorBox('home-error');

  const cpuChart = createChart('chart-cpu', 'CPU use over the last five minutes, in percent of all cores');
  const memChart = createChart('chart-mem', 'Memory in use over the last five minutes, in percent');
  const cpuNow = el('span', { id: 'cpu-now', class: 'now' }, '—');
  const memNow = el('span', { id: 'mem-now', class: 'now' }, '—');

  root.append(
    el('header', { class: 'page-head' }, name, el('p', { class: 'muted' }, 'This cloudlet')),
    homeError,
    el('div', { class: 'cards' },
      el('article', { class: 'card' }, el('h2', {}, 'Overview'), info),
      chartCard('CPU', cpuChart, cpuNow),
      chartCard('Memory', memChart, memNow)),
    settings(ctx),
  );

  ctx.info().then((data) => showInfo(name, info, data), (e) => showError(homeError, e));

  // The current figures until the first live sample arrives.
  ctx.api.get('/manager/api/system').then((s) => {
    if (ctx.load.latest) return;
    const cpu = s.cpu_info || {};
    const mem = s.memory_info || {};
    cpuNow.textContent = cpuText(cpu.usage, cpu.max_cores);
    memNow.textContent = memText(mem.max_memory, mem.free_memory);
    addFact(info, 'Processor', `${cpu.max_cores} cores, ${cpu.speed} MHz, ${cpu.cache} KB cache`);
    addFact(info, 'Memory', formatBytes(mem.max_memory));
  }, (e) => showError(homeError, e));

  function redraw() {
    drawChart(cpuChart, ctx.load.cpu);
    drawChart(memChart, ctx.load.mem);
    const d = ctx.load.latest;
    if (!d) return;
    cpuNow.textContent = cpuText(d.cpu_percent, d.cores);
    memNow.textContent = memText(d.memory_total, d.memory_free);
  }
  redraw();
  ctx.on('system.load', redraw);
}

function chartCard(title, chart, now) {
  return el('article', { class: 'card chart-card' },
    el('h2', {}, title, ' ', now),
    el('div', { class: 'chart-box' }, chart,
      el('span', { class: 'axis axis-max' }, '100 %'), el('span', { class: 'axis axis-min' }, '0')),
    el('p', { class: 'muted small' }, 'last 5 minutes'));
}

function cpuText(percent, cores) {
  const n = Number(cores) || 1;
  return `${(Number(percent) / n).toFixed(1)} % of ${n} core${n === 1 ? '' : 's'}`;
}

function memText(total, free) {
  const used = Number(total) - Number(free);
  const pct = total ? (used / total) * 100 : 0;
  return `${formatBytes(used)} of ${formatBytes(total)} (${pct.toFixed(0)} %)`;
}

function addFact(dl, term, ...values) {
  dl.append(el('dt', {}, term), el('dd', {}, ...values));
}

function showInfo(name, dl, data) {
  name.textContent = data.cloudlet_name || 'cloudlet';
  const listeners = el('ul', { class: 'plain' }, (data.listeners || []).map((l) =>
    el('li', {}, `${l.name}: ${l.host}:${l.port}`, l.tls ? el('span', { class: 'badge' }, 'TLS') : null)));
  const plugins = el('ul', { class: 'plain' }, (data.plugins || []).map((p) =>
    el('li', {}, `${p.name} ${p.version}`)));
  // Processor/memory facts may already be there: the overview goes first.
  const facts = [...dl.childNodes];
  dl.replaceChildren();
  addFact(dl, 'Version', data.version || '');
  addFact(dl, 'API mode', data.api_mode || '');
  addFact(dl, 'Listeners', listeners);
  addFact(dl, 'Plugins', plugins);
  addFact(dl, 'Operations', String((data.operations || []).length));
  dl.append(...facts);
}

// ---- settings: API tokens and the password ------------------------------------------------------

function settings(ctx) {
  const tokenError = errorBox('tokens-error');
  const secret = el('code', { id: 'token-secret', class: 'secret' });
  const secretBox = el('div', { class: 'once', hidden: true },
    el('p', {}, 'The new token (copy it now: it will not be shown again):'), secret);
  const tokenForm = el('form', { id: 'token-form', class: 'inline-form' },
    field('Token name', { name: 'name', required: true, maxlength: 128, autocomplete: 'off' }),
    el('div', { class: 'actions' }, el('button', { type: 'submit' }, 'Create token')));
  const tokens = table('tokens-table', ['Name', 'Created', '']);

  const reload = loader(() => ctx.api.get('/manager/api/tokens'), (list) => {
    const rows = (Array.isArray(list) ? list : []).map((t) => {
      const revoke = actionButton('Revoke', 'revoke', { class: 'danger small' });
      revoke.addEventListener('click', () => busy(revoke, async () => {
        clearError(tokenError);
        try {
          await ctx.api.del('/manager/api/tokens/' + encodeURIComponent(t.id));
          ctx.toast(`Token ${t.name} revoked`);
          reload();
        } catch (e) {
          showError(tokenError, e, tokens.wrap);
        }
      }));
      return el('tr', { 'data-id': t.id }, el('td', { class: 'name' }, t.name),
        el('td', {}, formatTime(t.created_ms)), el('td', { class: 'buttons' }, revoke));
    });
    fillRows(tokens.tbody, rows, 'No API tokens.', 3);
  }, (e) => showError(tokenError, e, tokens.wrap));
  reload();

  tokenForm.addEventListener('submit', (event) => {
    event.preventDefault();
    const button = tokenForm.querySelector('button[type="submit"]');
    busy(button, async () => {
      clearError(tokenError);
      try {
        const created = await ctx.api.post('/manager/api/tokens', { name: formValues(tokenForm).name });
        secret.textContent = created.token || '';
        secretBox.hidden = false;
        tokenForm.reset();
        reload();
      } catch (e) {
        showError(tokenError, e, tokenForm);
      }
    });
  });

  const passwordError = errorBox('password-error');
  const passwordForm = el('form', { id: 'password-form', class: 'inline-form' },
    // For password managers: whose password this is.
    el('input', { type: 'text', name: 'username', autocomplete: 'username', value: ctx.session.user || '', hidden: true }),
    field('Current password', { name: 'current', type: 'password', required: true, autocomplete: 'current-password' }),
    field('New password', { name: 'new', type: 'password', required: true, autocomplete: 'new-password' }),
    el('div', { class: 'actions' }, el('button', { type: 'submit' }, 'Change password')),
    passwordError);
  passwordForm.addEventListener('submit', (event) => {
    event.preventDefault();
    const button = passwordForm.querySelector('button[type="submit"]');
    // Not trimmed: spaces may be part of a password.
    const { current, new: next } = passwordForm.elements;
    busy(button, async () => {
      clearError(passwordError);
      try {
        await ctx.api.post('/manager/api/password', { current: current.value, new: next.value });
        // Changing the password ends every session, this one too.
        location.assign('/manager/login');
      } catch (e) {
        showError(passwordError, e);
      }
    });
  });

  return el('section', { class: 'card settings', 'aria-labelledby': 'settings-title' },
    el('h2', { id: 'settings-title' }, 'Settings'),
    el('div', { class: 'settings-grid' },
      el('div', {},
        el('h3', {}, 'API tokens'),
        el('p', { class: 'muted small' }, 'For scripts: send it as "Authorization: Bearer <token>".'),
        tokenForm, secretBox, tokenError, tokens.wrap),
      el('div', {}, el('h3', {}, 'Password'), passwordForm)));
}
