// The OpenLayers map: one layer per dataset shown (WMS GetMap from the dataset's status URL, or
// XYZ tiles from its tile cache), feature info from the WMS, a render counter for tests.
import Map from "ol/Map.js";
import View from "ol/View.js";
import ImageLayer from "ol/layer/Image.js";
import TileLayer from "ol/layer/Tile.js";
import ImageWMS from "ol/source/ImageWMS.js";
import XYZ from "ol/source/XYZ.js";
import ScaleLine from "ol/control/ScaleLine.js";
import { defaults as defaultControls } from "ol/control/defaults.js";
import { transformExtent } from "ol/proj.js";
import { clampBbox, endpoint, parseFeatureInfo } from "./ogc.js";

const $ = (id) => document.getElementById(id);

function hash(text) {
  let h = 0;
  for (let i = 0; i < text.length; i++) h = (Math.imul(31, h) + text.charCodeAt(i)) | 0;
  return (h >>> 0).toString(36);
}

export class MapView {
  constructor(target) {
    this.layers = new globalThis.Map(); // dataset id -> {layer, wms, detail}
    this.map = new Map({
      target,
      controls: defaultControls().extend([new ScaleLine()]),
      view: new View({ center: [0, 0], zoom: 1 }),
    });
    let rendered = 0;
    this.map.on("rendercomplete", () => {
      target.dataset.rendered = String(++rendered);
    });
  }

  // Shows exactly these dataset details (in list order, the first drawn at the bottom).
  show(details, source) {
    for (const [id, entry] of this.layers) {
      this.map.removeLayer(entry.layer);
      this.layers.delete(id);
    }
    const problems = [];
    for (const d of details) {
      const entry = this.layerOf(d, source);
      if (!entry) {
        problems.push(`${d.id}: not served yet`);
        continue;
      }
      this.layers.set(d.id, entry);
      this.map.addLayer(entry.layer);
    }
    this.setMessage(problems.join("; "));
  }

  layerOf(d, source) {
    const st = d.status || {};
    const url = endpoint(st.url);
    const layerName = st.layerName;
    if (!url || !layerName) return null;
    // a changed style, generation or served mapfile asks the WMS again (MapServer ignores the extra parameter)
    const version = `${st.observedGeneration ?? ""}-${hash(JSON.stringify(d.spec?.style || {}))}-${hash(d.served || "")}`;
    const wms = new ImageWMS({
      url,
      params: { LAYERS: layerName, STYLES: "", FORMAT: "image/png", TRANSPARENT: "TRUE", VERSION: "1.3.0", KMS_V: version },
      ratio: 1,
    });
    let layer;
    const xyz = st.tileCache && st.tileCache.xyz;
    if (source === "tiles" && xyz) {
      const tiles = new XYZ({ url: xyz }); // the cache version is in the cache's own paths
      tiles.on("tileloaderror", () => this.setMessage(`tiles of ${d.id} did not load from ${endpoint(xyz)}`));
      layer = new TileLayer({ source: tiles });
    } else {
      wms.on("imageloaderror", () => this.setMessage(`the WMS of ${d.id} did not answer at ${url}`));
      wms.on("imageloadend", () => this.setMessage(""));
      layer = new ImageLayer({ source: wms });
    }
    layer.set("dataset", d.id);
    return { layer, wms, detail: d };
  }

  fit(bbox) {
    const b = clampBbox(bbox);
    if (!b) return;
    const extent = transformExtent(b, "EPSG:4326", "EPSG:3857");
    this.map.getView().fit(extent, { padding: [20, 20, 20, 20] });
  }

  setMessage(text) {
    $("map-message").textContent = text;
  }

  // Feature info of one shown dataset at a map pixel: [{layer, attributes}] from its WMS.
  async featureInfo(id, coordinate) {
    const entry = this.layers.get(id);
    if (!entry) return [];
    const view = this.map.getView();
    const url = entry.wms.getFeatureInfoUrl(coordinate, view.getResolution(), view.getProjection(), {
      INFO_FORMAT: "application/vnd.ogc.gml",
      FEATURE_COUNT: 10,
    });
    const r = await fetch(url, { credentials: "omit" });
    if (!r.ok) throw new Error(`GetFeatureInfo answered ${r.status}`);
    const doc = new DOMParser().parseFromString(await r.text(), "application/xml");
    return parseFeatureInfo(doc);
  }

  // The map pixel (CSS px from the map's top-left) of a lon/lat, for tests and links.
  pixelOf(lon, lat) {
    const [x, y] = transformExtent([lon, lat, lon, lat], "EPSG:4326", "EPSG:3857");
    return this.map.getPixelFromCoordinate([x, y]);
  }
}
