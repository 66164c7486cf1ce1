// The manager's shell: session, header, navigation (a hash router), and the live-event hub
// that every page listens to. Pages never poll: they re-read what an event says has changed.

import * as api from './api.js';
import { Ring } from './chart.js';
import { el } from './ui.js';
import * as home from './pages/home.js';
import * as services from './pages/services.js';
import * as instances from './pages/instances.js';
import * as devices from './pages/devices.js';
import * as cloudlets from './pages/cloudlets.js';
import * as jobs from './pages/jobs.js';

const PAGES = { home, services, instances, devices, cloudlets, jobs };
const TITLES = {
  home: 'Home', services: 'Services', instances: 'Instances', devices: 'Devices', cloudlets: 'Cloudlets', jobs: 'Jobs',
};
const EVENTS_URL = '/manager/api/events?topics=instance.*,job.*,service.*,device.*,peer.*,system.*';
// EventSource only delivers named events one listens for by name, so the known topics are listed.
const TOPICS = ['instance.state', 'job.progress', 'job.done', 'service.changed', 'device.changed',
  'peer.found', 'peer.lost', 'system.load'];

const view = document.getElementById('view');
const live = document.getElementById('live');
const toastBox = document.getElementById('toast');

// ---- the hub: subscribers by topic ("job.done") or prefix ("job.*") -----------------------------

const subscribers = new Set();

function subscribe(pattern, fn) {
  const entry = { pattern, fn };
  subscribers.add(entry);
  return () => subscribers.delete(entry);
}

function matches(pattern, topic) {
  return pattern === topic || (pattern.endsWith('*') && topic.startsWith(pattern.slice(0, -1)));
}

function emit(topic, data) {
  for (const entry of [...subscribers]) {
    if (!subscribers.has(entry) || !matches(entry.pattern, topic)) continue;
    try {
      entry.fn(data, topic);
    } catch (e) {
      console.error('event handler for', topic, e);
    }
  }
}

// ---- state kept across pages: load history, jobs seen, the server's clock -------------------------

const load = { cpu: new Ring(), mem: new Ring(), latest: null };
const jobCache = new Map();
let clockOffset = 0; // server time minus browser time, from system.load

subscribe('system.load', (d) => {
  const t = Number(d.time_ms) || Date.now();
  // Only a plausible skew is used: a clock a day off is a wrong clock, not a skew to follow.
  const skew = t - Date.now();
  clockOffset = Math.abs(skew) < 86400000 ? skew : 0;
  const cores = Number(d.cores) || 1;
  const total = Number(d.memory_total) || 0;
  load.cpu.push({ t, v: Number(d.cpu_percent) / cores });
  load.mem.push({ t, v: total ? ((total - Number(d.memory_free)) / total) * 100 : 0 });
  load.latest = d;
});

subscribe('job.*', (job) => {
  if (!job || !job.job_id) return;
  jobCache.delete(job.job_id); // re-insert: the Map's order stays oldest first
  jobCache.set(job.job_id, job);
  while (jobCache.size > 300) jobCache.delete(jobCache.keys().next().value);
});

// ---- the live stream ----------------------------------------------------------------------------

let helloSeen = false;
let retryDelay = 2000;

function setLive(ok) {
  live.hidden = ok;
}

function connect() {
  const source = new EventSource(EVENTS_URL);
  source.addEventListener('hello', () => {
    setLive(true);
    retryDelay = 2000;
    // After a gap, events were missed: pages re-read their lists.
    if (helloSeen) emit('resync', {});
    helloSeen = true;
  });
  for (const topic of TOPICS) {
    source.addEventListener(topic, (event) => {
      let data;
      try {
        data = JSON.parse(event.data);
      } catch {
        return;
      }
      emit(topic, data);
    });
  }
  source.addEventListener('error', () => {
    setLive(false);
    // CONNECTING: the browser retries by itself. CLOSED: the server refused (401, 503, 400);
    // a session check sends an expired session to the login page, else try again later.
    if (source.readyState !== EventSource.CLOSED) return;
    api.get('/manager/api/session').catch(() => {});
    setTimeout(connect, retryDelay);
    retryDelay = Math.min(retryDelay * 2, 60000);
  });
}

// ---- toasts -------------------------------------------------------------------------------------

let toastTimer = 0;

function toast(message) {
  toastBox.textContent = message;
  toastBox.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { toastBox.hidden = true; }, 4000);
}

// ---- the router ---------------------------------------------------------------------------------

let cleanups = [];
let infoPromise = null;
let session = null;

function pageContext(cleanup) {
  return {
    api,
    toast,
    load,
    jobs: jobCache,
    session,
    info: () => infoPromise,
    serverNow: () => Date.now() + clockOffset,
    // Subscriptions and timers end with the page.
    on(pattern, fn) {
      const off = subscribe(pattern, fn);
      cleanup.push(off);
      return off;
    },
    every(ms, fn) {
      const id = setInterval(fn, ms);
      cleanup.push(() => clearInterval(id));
    },
  };
}

function route() {
  let name = (location.hash.match(/^#\/([a-z]+)/) || [])[1];
  if (!PAGES[name]) {
    name = 'home';
    history.replaceState(null, '', '#/home');
  }
  for (const off of cleanups) off();
  cleanups = [];
  for (const link of document.querySelectorAll('a[data-nav]')) {
    const current = link.dataset.nav === name;
    link.classList.toggle('active', current);
    if (current) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  const section = el('section', { id: 'page-' + name, class: 'page' });
  view.replaceChildren(section);
  document.title = TITLES[name] + ' · cloudletd manager';
  try {
    PAGES[name].mount(section, pageContext(cleanups));
  } catch (e) {
    section.append(el('p', { class: 'error', role: 'alert' }, 'This page failed to open: ' + e.message));
  }
  view.focus({ preventScroll: true });
}

// ---- start-up -----------------------------------------------------------------------------------

async function start() {
  const logout = document.getElementById('logout');
  logout.addEventListener('click', async () => {
    logout.disabled = true;
    try {
      await api.post('/manager/api/logout', {});
    } catch {
      // Leaving anyway: the login page is where a failed logout would end up too.
    }
    location.assign('/manager/login');
  });

  try {
    session = await api.get('/manager/api/session');
  } catch (e) {
    view.replaceChildren(el('p', { class: 'error', role: 'alert' }, 'Could not read the session: ' + e.message));
    return;
  }
  api.setCsrfToken(session.csrf_token);
  document.getElementById('whoami').textContent = session.user || session.principal || '';

  infoPromise = api.get('/manager/api/info');
  infoPromise.then((info) => {
    document.getElementById('cloudlet-name').textContent = info.cloudlet_name || 'cloudlet';
  }, () => {});

  connect();
  window.addEventListener('hashchange', route);
  route();
}

start();
