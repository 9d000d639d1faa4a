// Pure helpers for the map services: URLs from a dataset's status, extents, feature info parsing.

// The endpoint of a status URL (".../?SERVICE=WMS&REQUEST=GetCapabilities" -> ".../").
export function endpoint(url) {
  return url ? url.split("?")[0] : null;
}

export function capabilitiesUrl(url, service = "WMS") {
  const base = endpoint(url);
  return base ? `${base}?SERVICE=${service}&REQUEST=GetCapabilities` : null;
}

// Web mercator cannot show the poles: latitudes are clamped for the view.
const MAX_LAT = 85;
export function clampBbox(b) {
  if (!Array.isArray(b) || b.length !== 4 || b.some((v) => !Number.isFinite(v))) return null;
  const c = [
    Math.max(-180, b[0]),
    Math.max(-MAX_LAT, Math.min(MAX_LAT, b[1])),
    Math.min(180, b[2]),
    Math.max(-MAX_LAT, Math.min(MAX_LAT, b[3])),
  ];
  return c[0] < c[2] && c[1] < c[3] ? c : null;
}

export function unionBbox(boxes) {
  const ok = boxes.filter(Boolean);
  if (!ok.length) return null;
  return [
    Math.min(...ok.map((b) => b[0])),
    Math.min(...ok.map((b) => b[1])),
    Math.max(...ok.map((b) => b[2])),
    Math.max(...ok.map((b) => b[3])),
  ];
}

// A WMS 1.3.0 GetMap of the whole dataset in EPSG:4326 (latitude first), for a "PNG" link.
export function getMapUrl(url, layer, bbox, width = 768) {
  const base = endpoint(url);
  const b = clampBbox(bbox) && bbox;
  if (!base || !layer || !b) return null;
  const aspect = (b[3] - b[1]) / (b[2] - b[0]);
  const height = Math.max(16, Math.min(2048, Math.round(width * aspect)));
  const q = new URLSearchParams({
    SERVICE: "WMS",
    VERSION: "1.3.0",
    REQUEST: "GetMap",
    LAYERS: layer,
    STYLES: "",
    CRS: "EPSG:4326",
    BBOX: [b[1], b[0], b[3], b[2]].join(","),
    WIDTH: String(width),
    HEIGHT: String(height),
    FORMAT: "image/png",
    TRANSPARENT: "TRUE",
  });
  return `${base}?${q}`;
}

// MapServer's GML feature info (msGMLOutput): <NAME_layer><NAME_feature><attr>value</attr>...
// -> [{layer, attributes: [[name, value], ...]}]; geometry and bounding boxes are left out.
export function parseFeatureInfo(doc) {
  const out = [];
  for (const el of doc.getElementsByTagName("*")) {
    const name = el.localName || "";
    if (!name.endsWith("_feature")) continue;
    const attributes = [];
    for (const child of el.children) {
      if (child.namespaceURI && child.namespaceURI.includes("gml")) continue;
      if (child.children.length) continue;
      attributes.push([child.localName, child.textContent.trim()]);
    }
    out.push({ layer: name.slice(0, -"_feature".length), attributes });
  }
  return out;
}

// A service from GET /services/{name} (ServiceDetail, camelCase): {name, title, ready, reason,
// replicas, readyReplicas, datasets: [MapDataset names], conditions, urls: {wms, wfs, wcs, ogcapi,
// tiles: {url, wmts, tms, xyz, wms}}}. Items of GET /services ({items: [ServiceItem]}) carry no
// datasets, conditions or urls: those are empty until the detail is loaded.
export function serviceOf(raw) {
  return {
    name: raw.name,
    title: raw.title || null,
    ready: raw.ready === true,
    reason: raw.reason || null,
    replicas: raw.replicas ?? null,
    readyReplicas: raw.readyReplicas ?? null,
    conditions: raw.conditions || [],
    datasets: (raw.datasets || []).filter((d) => typeof d === "string"),
    urls: raw.urls || {},
  };
}

// A service's links, in a fixed order: [[label, url], ...] for the URLs it has (the tile cache's
// TMS and XYZ templates hold placeholders: they are not links).
export function serviceLinks(urls = {}) {
  const out = [
    ["WMS", urls.wms],
    ["WFS", urls.wfs],
    ["WCS", urls.wcs],
    ["OGC API", urls.ogcapi],
    ["WMTS (tile cache)", urls.tiles?.wmts],
    ["Tiled WMS (tile cache)", urls.tiles?.wms],
  ];
  return out.filter(([, url]) => typeof url === "string" && url);
}

// The preview image's size for a panel `width` CSS px wide, over `bbox` (EPSG:4326 degrees, as
// POST /datasets/preview draws it): the bbox's aspect, sides within [16, max].
export function previewSize(bbox, width, max = 2048) {
  const b = Array.isArray(bbox) && bbox.length === 4 && bbox.every(Number.isFinite) ? bbox : null;
  const w = Math.max(16, Math.min(max, Math.round(width) || 0));
  if (!b || !(b[2] > b[0]) || !(b[3] > b[1])) return { width: w, height: w };
  const h = Math.round((w * (b[3] - b[1])) / (b[2] - b[0]));
  if (h <= max) return { width: w, height: Math.max(16, h) };
  return { width: Math.max(16, Math.round((max * (b[2] - b[0])) / (b[3] - b[1]))), height: max };
}
