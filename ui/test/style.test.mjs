// node --test ui/test: the style editor's pure functions (run by tests/unit/test_ui.py).
import assert from "node:assert/strict";
import { test } from "node:test";
import { fieldsOf, mergePatch, previewBody, styleFrom } from "../src/style.js";
import { clampBbox, getMapUrl, serviceOf } from "../src/ogc.js";

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

test("services of any listing shape", () => {
  const s = serviceOf({ name: "ocean", datasets: ["a", { name: "b" }], urls: { wms: "http://x/" } });
  assert.deepEqual(s.datasets, ["a", "b"]);
});
