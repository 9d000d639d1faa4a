// The layer preview page: login, services (GET /services, each one's URLs from GET
// /services/{name}) and datasets with a search, the map, a dataset's status and links, feature info on click, the style editor.
import "ol/ol.css";
import "./app.css";
import { ApiError, call, getJson, login, logout, setUnauthorizedHandler, token } from "./api.js";
import { StyleEditor } from "./editor.js";
import { MapView } from "./map.js";
import { capabilitiesUrl, getMapUrl, serviceLinks, serviceOf, unionBbox } from "./ogc.js";

const $ = (id) => document.getElementById(id);
const el = (tag, text, attrs = {}) => {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
};

const state = {
  services: [], // serviceOf() entries: from GET /services, then each one's detail
  datasets: [],
  shown: [], // dataset ids on the map, in order
  focus: null, // the dataset whose status, feature info and style are shown
  details: new Map(), // id -> {detail, etag}
};
let map;
let editor;

// ------------------------------------------------------------------------------- login

function showLogin(message = "") {
  $("app").hidden = true;
  $("who").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message;
}

async function start() {
  try {
    const me = await getJson("me");
    $("user").textContent = `${me.name} (${me.role})`;
  } catch (e) {
    showLogin(e instanceof ApiError && e.status !== 401 ? e.message : "");
    return;
  }
  $("login").hidden = true;
  $("who").hidden = false;
  $("app").hidden = false;
  if (!map) {
    map = new MapView($("map"));
    map.map.on("singleclick", (ev) => featureInfo(ev.coordinate));
    editor = new StyleEditor({ beforeSave: servedHashes, onSaved: followSave });
    globalThis.kmsUi = { pixelOf: (lon, lat) => map.pixelOf(lon, lat) }; // for the browser tests
  }
  await Promise.all([loadServices(), loadDatasets()]);
}

$("login").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const f = new FormData(ev.target);
  try {
    await login(f.get("username"), f.get("password"));
    ev.target.reset();
    await start();
  } catch (e) {
    showLogin(e.message);
  }
});
$("logout").addEventListener("click", () => {
  logout();
  showLogin();
});
setUnauthorizedHandler(() => showLogin("your session ended: log in again"));

// ------------------------------------------------------------------------ lists, search

// GET /services ({total, limit, offset, items}) lists names and readiness; each service's
// datasets and URLs come from GET /services/{name} (a handful of services: one call each).
const MAX_SERVICES = 100;
async function loadServices() {
  try {
    const page = await getJson(`services?limit=${MAX_SERVICES}`);
    state.services = page.items.map(serviceOf);
    renderServices();
    state.services = await Promise.all(
      state.services.map(async (s) => {
        try {
          return serviceOf(await getJson(`services/${encodeURIComponent(s.name)}`));
        } catch (e) {
          if (e instanceof ApiError && e.status === 404) return null; // deleted meanwhile
          return { ...s, error: e.message };
        }
      }),
    );
    state.services = state.services.filter(Boolean);
  } catch (e) {
    $("map-message").textContent = `services: ${e.message}`;
  }
  renderServices();
}

async function loadDatasets() {
  const q = $("search").value.trim();
  const params = new URLSearchParams({ limit: "200", sort: "id" });
  if (q) params.set("q", q);
  const page = await getJson(`datasets?${params}`);
  state.datasets = page.items;
  $("dataset-count").textContent = `(${page.total})`;
  renderDatasets();
}

function renderServices() {
  const q = $("search").value.trim().toLowerCase();
  const ul = $("services");
  ul.replaceChildren();
  const shown = state.services.filter((s) => !q || `${s.name}\n${s.title || ""}`.toLowerCase().includes(q));
  $("service-count").textContent = `(${shown.length})`;
  for (const s of shown) {
    const li = el("li", null, { "data-service": s.name });
    const b = el("button", s.name, { type: "button", class: "link", title: s.title || s.name });
    b.addEventListener("click", () => openService(s.name));
    const replicas = s.replicas === null ? "" : ` · ${s.readyReplicas ?? 0}/${s.replicas}`;
    li.append(b, el("span", `${s.ready ? "ready" : s.reason || "not ready"}${replicas}`, { class: s.ready ? "ok" : "bad" }));
    const links = el("ul", null, { class: "service-urls" });
    for (const [label, url] of serviceLinks(s.urls)) links.append(linkItem(label, url));
    if (s.error) links.append(el("li", s.error, { class: "bad" }));
    li.append(links);
    ul.append(li);
  }
}

function renderDatasets() {
  const ul = $("datasets");
  ul.replaceChildren();
  for (const d of state.datasets) {
    const li = el("li", null, { "data-dataset": d.id });
    const box = el("input", null, { type: "checkbox", "aria-label": `show ${d.id} on the map` });
    box.checked = state.shown.includes(d.id);
    box.addEventListener("change", () => toggle(d.id, box.checked));
    const b = el("button", d.title || d.id, { type: "button", class: "link", title: d.id });
    b.addEventListener("click", () => openDataset(d.id));
    li.append(box, b, el("span", `${d.type || ""} · ${d.ready ? "ready" : d.reason || "not ready"}`, { class: d.ready ? "ok" : "bad" }));
    if (d.id === state.focus) li.classList.add("focus");
    ul.append(li);
  }
}

let searchTimer;
$("search").addEventListener("input", () => {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(() => {
    renderServices();
    loadDatasets().catch((e) => ($("map-message").textContent = e.message));
  }, 250);
});
for (const r of document.querySelectorAll("input[name=source]")) r.addEventListener("change", () => redraw(false));

// ------------------------------------------------------------------------------- the map

async function detailOf(id, fresh = false) {
  if (!fresh && state.details.has(id)) return state.details.get(id);
  const r = await call(`datasets/${encodeURIComponent(id)}`);
  const entry = { detail: await r.json(), etag: r.headers.get("ETag") };
  state.details.set(id, entry);
  return entry;
}

function source() {
  return document.querySelector("input[name=source]:checked").value;
}

async function redraw(fit) {
  const details = [];
  for (const id of state.shown) {
    try {
      details.push((await detailOf(id)).detail);
    } catch (e) {
      $("map-message").textContent = `${id}: ${e.message}`;
    }
  }
  // rasters below vectors, whatever order they were checked in
  details.sort((a, b) => (a.spec.type === "raster" ? 0 : 1) - (b.spec.type === "raster" ? 0 : 1));
  map.show(details, source());
  if (fit) map.fit(unionBbox(details.map((d) => d.status?.wgs84Bbox).filter(Boolean)));
  renderDatasets();
}

async function toggle(id, on) {
  state.shown = on ? [...state.shown.filter((x) => x !== id), id] : state.shown.filter((x) => x !== id);
  await redraw(on); // a dataset added: the map shows all of them
}

// Opens a dataset: alone on the map (fitted to its extent; the checkboxes add others), its
// status, links and style editor; clicks on the map query it.
async function openDataset(id) {
  state.focus = id;
  state.shown = [id];
  const { detail, etag } = await detailOf(id, true);
  $("service-panel").hidden = true;
  renderDataset(detail);
  editor.show(detail, etag);
  $("editor-panel").hidden = false;
  $("info-panel").hidden = true;
  await redraw(false);
  map.fit(detail.status?.wgs84Bbox);
}

// Opens a service: its datasets on the map (fresh from GET /services/{name}), links, conditions.
async function openService(name) {
  let s;
  try {
    s = serviceOf(await getJson(`services/${encodeURIComponent(name)}`));
  } catch (e) {
    $("map-message").textContent = `${name}: ${e.message}`;
    return;
  }
  state.services = state.services.map((x) => (x.name === name ? s : x));
  renderServices();
  state.shown = [...s.datasets];
  state.focus = s.datasets[0] || null;
  $("dataset-panel").hidden = true;
  $("editor-panel").hidden = true;
  $("service-panel").hidden = false;
  $("service-title").textContent = `Service ${s.name}`;
  $("service-summary").textContent =
    `${s.title || s.name} · ${s.ready ? "ready" : s.reason || "not ready"}` +
    (s.replicas === null ? "" : ` · ${s.readyReplicas ?? 0}/${s.replicas} replicas`) +
    ` · ${s.datasets.length} dataset(s): ${s.datasets.join(", ") || "none"}`;
  const links = $("service-links");
  links.replaceChildren();
  for (const [label, url] of serviceLinks(s.urls)) links.append(linkItem(label, url));
  const mf = el("button", "Mapfile", { type: "button", class: "link" });
  mf.addEventListener("click", () => showMapfile(s.name));
  const li = el("li");
  li.append(mf);
  links.append(li);
  $("mapfile").hidden = true;
  renderConditions($("service-conditions"), s.conditions);
  await redraw(false);
  map.fit(unionBbox(s.datasets.map((id) => state.details.get(id)?.detail.status?.wgs84Bbox)));
}

async function showMapfile(name) {
  const pre = $("mapfile");
  try {
    pre.textContent = await (await call(`services/${encodeURIComponent(name)}/mapfile`)).text();
  } catch (e) {
    pre.textContent = `mapfile: ${e.message}`;
  }
  pre.hidden = false;
}

// --------------------------------------------------------------------------- the panels

function linkItem(label, href) {
  const li = el("li");
  if (/^https?:\/\//i.test(href)) li.append(el("a", label, { href, target: "_blank", rel: "noopener noreferrer" }));
  else li.append(el("span", `${label}: ${href}`)); // never a javascript: or data: link
  return li;
}

function renderConditions(table, conditions) {
  table.replaceChildren();
  const head = el("tr");
  for (const h of ["condition", "status", "reason", "message"]) head.append(el("th", h));
  table.append(head);
  for (const c of conditions || []) {
    const tr = el("tr", null, { "data-condition": c.type });
    for (const v of [c.type, c.status, c.reason || "", c.message || ""]) tr.append(el("td", v));
    table.append(tr);
  }
}

function renderDataset(d) {
  const st = d.status || {};
  $("dataset-panel").hidden = false;
  $("dataset-title").textContent = d.spec.title || d.id;
  const served = (st.servedBy || []).join(", ") || "no service";
  $("dataset-summary").textContent =
    `${d.id} · ${d.spec.type} · layer ${st.layerName || "?"} · served by ${served}` + (d.ready ? "" : ` · ${d.reason || "not ready"}`);
  const links = $("dataset-links");
  links.replaceChildren();
  const caps = capabilitiesUrl(st.url);
  if (caps) links.append(linkItem("WMS GetCapabilities", caps));
  const png = getMapUrl(st.url, st.layerName, st.wgs84Bbox);
  if (png) links.append(linkItem("PNG preview (GetMap)", png));
  if (st.tileCache?.wmts) links.append(linkItem("WMTS capabilities (tile cache)", st.tileCache.wmts));
  if (st.ogcapi) links.append(linkItem("OGC API Features collection", st.ogcapi));
  if (d.spec.protocols?.includes("WFS") && caps) links.append(linkItem("WFS GetCapabilities", capabilitiesUrl(st.url, "WFS")));
  if (d.spec.protocols?.includes("WCS") && caps) links.append(linkItem("WCS GetCapabilities", capabilitiesUrl(st.url, "WCS")));
  renderConditions($("dataset-conditions"), st.conditions);
}

async function featureInfo(coordinate) {
  const id = state.focus;
  const box = $("feature-info");
  $("info-panel").hidden = false;
  if (!id) {
    box.textContent = "open a dataset to query it";
    return;
  }
  box.textContent = "asking the WMS…";
  box.dataset.state = "busy";
  try {
    const found = await map.featureInfo(id, coordinate);
    box.replaceChildren();
    if (!found.length) box.append(el("p", "no feature here"));
    for (const f of found) {
      const t = el("table", null, { class: "feature", "data-layer": f.layer });
      t.append(el("caption", f.layer));
      for (const [k, v] of f.attributes) {
        const tr = el("tr", null, { "data-attribute": k });
        tr.append(el("th", k), el("td", v));
        t.append(tr);
      }
      box.append(t);
    }
    box.dataset.state = "done";
  } catch (e) {
    box.textContent = `feature info: ${e.message}`;
    box.dataset.state = "error";
  }
}

// The live mapfile hash of each service serving a dataset: {name: hash} (taken before a save).
async function servedHashes(detail) {
  const out = {};
  for (const name of detail.status?.servedBy || []) {
    try {
      out[name] = (await getJson(`services/${encodeURIComponent(name)}`)).mapfileHash || null;
    } catch {
      out[name] = null;
    }
  }
  return out;
}

// After a save: follow the change until it is served. The dataset is reconciled (its
// observedGeneration moves past the one the PATCH answered with, Ready again), then every service
// serving it has rolled out a new mapfile (another hash than before the save, Ready). The map is
// redrawn whenever that changes (the hashes are in the WMS URLs: no image from before is reused).
async function followSave(id, patched, hashesBefore) {
  const generationBefore = patched.status?.observedGeneration;
  let seen = "";
  for (let i = 0; i < 90; i++) {
    await new Promise((r) => setTimeout(r, 2000));
    const { detail, etag } = await detailOf(id, true);
    const services = [];
    for (const name of detail.status?.servedBy || []) {
      try {
        services.push(await getJson(`services/${encodeURIComponent(name)}`));
      } catch {
        services.push({ name, ready: false });
      }
    }
    detail.served = services.map((s) => `${s.name}:${s.mapfileHash}:${s.ready}`).join(",");
    if (state.focus === id) {
      renderDataset(detail);
      if (editor.detail?.id === id && editor.etag !== etag) {
        editor.detail = detail;
        editor.etag = etag;
      }
    }
    const reconciled = detail.ready && detail.status?.observedGeneration !== generationBefore;
    const rolled = services.every((s) => s.ready && s.mapfileHash && s.mapfileHash !== hashesBefore?.[s.name]);
    const key = `${detail.status?.observedGeneration}|${detail.served}`;
    if (key !== seen) {
      seen = key;
      await redraw(false);
    }
    if (reconciled && rolled) {
      if (state.focus === id) editor.message("saved and served: the map shows the new style", "served", 200);
      return;
    }
  }
}

if (token()) start();
else showLogin();
