// The review page: plain DOM, no framework, no CDN. Text from the server is always set
// with textContent (never innerHTML), so nothing received can run as script.
"use strict";

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

async function api(path, options = {}) {
  const response = await fetch(path, { credentials: "same-origin", ...options });
  if (response.status === 401) { show("login"); throw new Error("signed out"); }
  const body = response.status === 204 ? {} : await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function show(section) {
  for (const id of ["login", "studies", "study"]) $(id).hidden = id !== section;
}

function when(seconds) {
  return new Date(seconds * 1000).toLocaleString();
}

async function loadStudies() {
  const { studies } = await api("/api/studies");
  const rows = $("study-rows");
  rows.replaceChildren();
  for (const study of studies) {
    const open = el("a", { href: `#study/${study.id}`, text: `#${study.id}` });
    const actions = el("td", { "data-label": "Actions" });
    if (study.dead) {
      const retry = el("button", { type: "button", class: "secondary",
        "aria-label": `Retry dead letters of study ${study.id}`, text: "Retry" });
      retry.addEventListener("click", () => retryStudy(study.id));
      actions.append(retry);
    }
    rows.append(el("tr", { "data-study": String(study.id) },
      el("td", { "data-label": "Study" }, open),
      el("td", { "data-label": "Received", text: when(study.received) }),
      el("td", { "data-label": "State", class: `state-${study.state}`, text: study.state }),
      el("td", { "data-label": "Instances",
        text: `${study.instances} (${study.processed} analysed)` }),
      el("td", { "data-label": "Delivered", text: `${study.sent} of ${study.deliveries}` }),
      actions));
  }
  $("studies-status").textContent = `${studies.length} studies`;
}

async function retryStudy(id) {
  const counts = await api(`/api/studies/${id}/retry`, { method: "POST" });
  await loadStudies();
  $("studies-status").textContent =
    `Study ${id}: ${counts.deliveries} deliveries and ${counts.instances} instances requeued`;
}

function layerToggles(instance, stack) {
  const box = el("fieldset", {}, el("legend", { text: "Show" }));
  for (const [name, url] of Object.entries(instance.layers)) {
    if (name === "radiograph") continue;
    const label = name === "heat" ? "heat map (not a lesion outline)" : name.replace("segment-", "");
    const image = el("img", { src: url, alt: "", class: "layer", "data-layer": name });
    stack.append(image);
    const input = el("input", { type: "checkbox", checked: "", "data-toggle": name });
    input.addEventListener("change", () => { image.hidden = !input.checked; });
    box.append(el("label", {}, input, label));
  }
  return box;
}

function findingsTable(analysis) {
  const table = el("table", {}, el("caption", { text: "Findings" }),
    el("thead", {}, el("tr", {}, el("th", { scope: "col", text: "Finding" }),
      el("th", { scope: "col", text: "Probability" }),
      el("th", { scope: "col", text: "Threshold" }), el("th", { scope: "col", text: "Call" }))));
  const body = el("tbody");
  for (const f of analysis.findings) {
    const zones = (f.zones || []).map((z) => `${z.side} ${z.level}`).join(", ");
    const call = f.positive ? `positive${zones ? " (" + zones + ")" : ""}` : "negative";
    body.append(el("tr", {}, el("td", { text: f.name }),
      el("td", { text: f.probability.toFixed(2) }), el("td", { text: f.threshold.toFixed(2) }),
      el("td", { class: f.positive ? "positive" : "", text: call + (f.note ? `; ${f.note}` : "") })));
  }
  table.append(body);
  return table;
}

function measurementList(analysis) {
  const list = el("dl");
  for (const m of analysis.measurements) {
    list.append(el("dt", { text: `${m.name}: ${Number(m.value).toFixed(2)} ${m.unit}` }),
      el("dd", { text: m.derivation }));
  }
  return list;
}

function instanceView(instance) {
  const section = el("section", { class: "instance" },
    el("h3", { text: `Image ${instance.n}: ${instance.state}` }));
  if (instance.reason) section.append(el("p", { text: `Reason: ${instance.reason}` }));
  const analysis = instance.analysis;
  if (!analysis) return section;
  const stack = el("div", { class: "stack" });
  if (instance.layers.radiograph) {
    stack.append(el("img", { src: instance.layers.radiograph,
      alt: `Radiograph ${instance.n} with the AI's segments`, "data-layer": "radiograph" }));
  }
  const panel = el("div", { class: "panel" }, layerToggles(instance, stack),
    findingsTable(analysis), el("h4", { text: "Measurements" }), measurementList(analysis),
    el("h4", { text: "Quality flags" }),
    el("p", { text: analysis.quality_flags.join(", ") || "none" }),
    el("h4", { text: "Models" }),
    el("p", { text: analysis.models.map((m) => m.id).join(", ") }));
  section.append(el("div", { class: "viewer" }, stack, panel));
  return section;
}

async function openStudy(id) {
  const study = await api(`/api/studies/${id}`);
  $("study-title").textContent = `Study #${study.id}: ${study.state}`;
  const body = $("study-body");
  body.replaceChildren(...study.instances.map(instanceView));
  const deliveries = el("ul");
  for (const d of study.deliveries) {
    deliveries.append(el("li", { text: `${d.kind} of image ${d.instance} to ${d.destination}: ` +
      `${d.state}${d.attempts ? ` after ${d.attempts} attempts` : ""}` +
      `${d.last_error ? ` (${d.last_error})` : ""}` }));
  }
  body.append(el("h3", { text: "Deliveries" }), deliveries);
  show("study");
  $("study-title").focus();
}

async function route() {
  const match = location.hash.match(/^#study\/(\d+)$/);
  try {
    if (match) await openStudy(match[1]);
    else { await loadStudies(); show("studies"); }
  } catch (error) {
    if (error.message !== "signed out") $("studies-status").textContent = error.message;
  }
}

async function start() {
  const { holder } = await api("/api/session");
  if (holder) await route(); else show("login");
}

async function login(event) {
  event.preventDefault();
  $("login-error").textContent = "";
  const response = await fetch("/api/session", { method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ token: $("token").value }) });
  $("token").value = "";
  if (!response.ok) { $("login-error").textContent = "That token is not valid."; return; }
  await route();
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", login);
  $("refresh").addEventListener("click", route);
  $("back").addEventListener("click", () => { location.hash = ""; });
  $("logout").addEventListener("click", async () => {
    await fetch("/api/session", { method: "DELETE", credentials: "same-origin" });
    show("login");
  });
  window.addEventListener("hashchange", route);
  start();
});
