// The manager's status page: server facts, paired devices, and the live event stream (Server-Sent Events).
// Every value from the server is inserted as text, never as HTML.
"use strict";

function text(tag, value) {
  const el = document.createElement(tag);
  el.textContent = value === undefined || value === null ? "" : String(value);
  return el;
}

async function getJSON(path) {
  const r = await fetch(path, { cache: "no-store" });
  if (r.status === 401) location.assign("/manager/login");  // the session ended (idle, logout, new password)
  if (!r.ok) throw new Error(path + ": " + r.status);
  return r.json();
}

async function loadInfo() {
  const info = await getJSON("/manager/api/info");
  document.getElementById("name").textContent = info.cloudlet_name;
  const dl = document.getElementById("info");
  dl.replaceChildren();
  const rows = [
    ["version", info.version],
    ["API mode", info.api_mode],
    ["listeners", info.listeners.map((l) => `${l.name} ${l.host}:${l.port}${l.tls ? " (TLS)" : ""}`).join(", ")],
    ["plugins", info.plugins.map((p) => `${p.name} ${p.version}`).join(", ") || "none"],
    ["operations", info.operations.length],
  ];
  for (const [k, v] of rows) dl.append(text("dt", k), text("dd", v));
}

async function loadDevices() {
  const body = document.querySelector("#devices tbody");
  const { devices } = await getJSON("/manager/api/devices");
  body.replaceChildren();
  for (const d of devices) {
    const tr = document.createElement("tr");
    tr.append(text("td", d.device_id), text("td", d.state), text("td", new Date(d.auth_end_ms).toLocaleString()),
              text("td", d.instances.length));
    body.append(tr);
  }
  if (!devices.length) body.append(text("tr", "")).lastChild.append(text("td", "none"));
}

function follow() {
  const live = document.getElementById("live");
  const list = document.getElementById("events");
  const es = new EventSource("/manager/api/events");
  es.onopen = () => { live.textContent = "live"; live.className = ""; };
  es.onerror = () => { live.textContent = "reconnecting"; live.className = "off"; };
  const show = (e) => {
    list.prepend(text("li", `${new Date().toLocaleTimeString()} ${e.type} ${e.data}`));
    while (list.children.length > 200) list.lastChild.remove();
    if (e.type.startsWith("device.")) loadDevices().catch(() => {});
  };
  for (const t of ["instance.state", "service.changed", "job.progress", "job.done", "device.changed",
                   "peer.found", "peer.lost", "hello.greeted", "vm.lifecycle"]) {
    es.addEventListener(t, show);
  }
}

loadInfo().catch((e) => console.error(e));
loadDevices().catch((e) => console.error(e));
follow();
