// node --test ui/test: the style editor's pure functions (run by tests/unit/test_ui.py).
import assert from "node:assert/strict";
import { test } from "node:test";
import { fieldsOf, mergePatch, previewBody, styleFrom } from "../src/style.js";
import { clampBbox, getMapUrl, previewSize, serviceLinks, serviceOf } from "../src/ogc.js";

const zones = {
  classItem: "kind",
  vectorClasses: [
    { name: "Protected", value: "protected", color: "#2ca25f" },
    { name: "Fishing", value: "fishing", color: "#fdae6b" },
  ],
  outlineColor: "#333333",
  opacity: 80,
};

test("vector classes get one colour field each, and a changed colour becomes a merge patch", () => {
  const fields = fieldsOf("vector", zones);
  assert.deepEqual(fields.map((f) => f.name), ["class-0-color", "class-1-color", "outlineColor", "opacity"]);
  const values = Object.fromEntries(fields.map((f) => [f.name, String(f.value)]));
  assert.deepEqual(mergePatch(zones, styleFrom("vector", zones, values)), {});
  values["class-0-color"] = "#ff0000";
  const style = styleFrom("vector", zones, values);
  assert.equal(style.vectorClasses[0].color, "#ff0000");
  // arrays are replaced whole by a merge patch
  assert.deepEqual(mergePatch(zones, style), { vectorClasses: style.vectorClasses });
});

test("raster fields round-trip; clearing the range removes it (null in the patch)", () => {
  const sst = { colorRamp: "viridis", classes: 8, range: { min: 0, max: 30 } };
  const values = Object.fromEntries(fieldsOf("raster", sst).map((f) => [f.name, String(f.value)]));
  const same = styleFrom("raster", sst, values);
  assert.deepEqual(mergePatch(sst, same), {});
  const patch = mergePatch(sst, styleFrom("raster", sst, { ...values, rangeMin: "", colorRamp: "magma" }));
  assert.deepEqual(patch, { colorRamp: "magma", range: null });
});

test("the preview body is the create body with the new style", () => {
  const detail = { id: "zones-sample", labels: { collection: "ocean" }, spec: { type: "vector", title: "Z", style: zones } };
  const body = previewBody(detail, { color: "#000000" });
  assert.deepEqual(body.style, { color: "#000000" });
  assert.equal(body.id, "zones-sample");
  assert.deepEqual(body.labels, { collection: "ocean" });
  assert.equal(detail.spec.style, zones);
});

test("extents are clamped for web mercator; GetMap links are WMS 1.3.0 latitude first", () => {
  assert.deepEqual(clampBbox([-180, -90, 180, 90]), [-180, -85, 180, 85]);
  assert.equal(clampBbox([1, 2, 1, 3]), null);
  const url = new URL(getMapUrl("http://s:8080/?SERVICE=WMS&REQUEST=GetCapabilities", "kms_x", [0, 20, 20, 70], 100));
  assert.equal(url.searchParams.get("BBOX"), "20,0,70,20");
  assert.equal(url.searchParams.get("HEIGHT"), "250");
});

test("a service as GET /services/{name} answers it, and its links (OGC API included)", () => {
  const detail = {
    name: "ocean",
    title: "Ocean maps",
    ready: true,
    replicas: 2,
    readyReplicas: 2,
    datasets: ["sst-sample", "zones-sample"],
    conditions: [{ type: "Ready", status: "True" }],
    urls: {
      wms: "http://m/ocean/?SERVICE=WMS&REQUEST=GetCapabilities",
      wfs: "http://m/ocean/?SERVICE=WFS&REQUEST=GetCapabilities",
      wcs: null,
      ogcapi: "http://m/ocean/ogcapi",
      tiles: { wmts: "http://t/wmts?REQUEST=GetCapabilities", xyz: "http://t/{z}/{x}/{y}.png" },
    },
  };
  const s = serviceOf(detail);
  assert.deepEqual(s.datasets, ["sst-sample", "zones-sample"]);
  assert.equal(s.readyReplicas, 2);
  assert.deepEqual(
    serviceLinks(s.urls).map(([label]) => label),
    ["WMS", "WFS", "OGC API", "WMTS (tile cache)"],
  );
  // a list item (GET /services) has no urls or datasets yet
  const item = serviceOf({ name: "ocean", ready: false, url: "http://m/ocean/" });
  assert.deepEqual([item.datasets, serviceLinks(item.urls)], [[], []]);
});

test("the preview's size follows the panel's width and the extent's aspect", () => {
  assert.deepEqual(previewSize([0, 0, 20, 10], 340), { width: 340, height: 170 });
  assert.deepEqual(previewSize([0, 0, 1, 100], 340, 2048), { width: 20, height: 2048 });
  assert.deepEqual(previewSize(null, 5), { width: 16, height: 16 });
});

test("an untouched default outline is not added to a style that has none", () => {
  const plain = { color: "#3388ff" };
  const values = Object.fromEntries(fieldsOf("vector", plain).map((f) => [f.name, String(f.value)]));
  assert.deepEqual(mergePatch(plain, styleFrom("vector", plain, values)), {});
  values.outlineColor = "#000000";
  assert.deepEqual(mergePatch(plain, styleFrom("vector", plain, values)), { outlineColor: "#000000" });
});
