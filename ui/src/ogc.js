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

// A service entry from GET /services, whatever shape it takes: {name, ready, datasets, urls}.
export function serviceOf(raw) {
  const datasets = (raw.datasets || []).map((d) => (typeof d === "string" ? d : d.name || d.id));
  return {
    name: raw.name,
    ready: raw.ready,
    conditions: raw.conditions || [],
    replicas: raw.replicas,
    datasets: datasets.filter(Boolean),
    urls: raw.urls || {},
  };
}
