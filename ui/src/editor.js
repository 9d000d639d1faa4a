// The style editor panel: fields from style.js, "Preview" renders through POST /datasets/preview
// over the dataset's extent (bbox, EPSG:4326) at the panel's width (PNG in #style-preview-img),
// "Save" sends PATCH /datasets/{id} with If-Match: the ETag of the GET /datasets/{id} the editor
// was loaded from (then of the PATCH's answer); a 412 means the dataset changed meanwhile.
// Stable hooks for tests: #style-editor [name=...] inputs, #style-preview, #style-save,
// #style-message (data-state: idle|busy|previewed|saved|served|error; data-status: the HTTP status
// of a save or a failure, e.g. 412), #style-preview-img.
import { call } from "./api.js";
import { previewSize } from "./ogc.js";
import { fieldsOf, mergePatch, previewBody, styleFrom } from "./style.js";

const $ = (id) => document.getElementById(id);

function input(f) {
  const el = document.createElement(f.kind === "select" ? "select" : "input");
  el.name = f.name;
  if (f.kind === "select") {
    for (const o of f.options) {
      const opt = document.createElement("option");
      opt.value = o;
      opt.textContent = o;
      el.append(opt);
    }
  } else {
    el.type = f.kind;
    if (f.min !== undefined) el.min = String(f.min);
    if (f.max !== undefined) el.max = String(f.max);
    if (f.kind === "number") el.step = "any";
  }
  el.value = String(f.value);
  return el;
}

export class StyleEditor {
  // beforeSave(detail) -> token, then onSaved(id, the PATCH's answer, token)
  constructor({ beforeSave = async () => null, onSaved }) {
    this.detail = null;
    this.etag = null;
    this.beforeSave = beforeSave;
    this.onSaved = onSaved;
    this.previewUrl = null;
    $("style-preview").addEventListener("click", () => this.preview());
    $("style-save").addEventListener("click", () => this.save());
  }

  show(detail, etag) {
    this.detail = detail;
    this.etag = etag;
    const form = $("style-editor");
    form.replaceChildren();
    for (const f of fieldsOf(detail.spec.type, detail.spec.style || {})) {
      const label = document.createElement("label");
      label.append(document.createTextNode(f.label), input(f));
      form.append(label);
    }
    this.message("", "idle");
    $("style-preview-img").hidden = true;
  }

  values() {
    return Object.fromEntries(new FormData($("style-editor")).entries());
  }

  style() {
    return styleFrom(this.detail.spec.type, this.detail.spec.style || {}, this.values());
  }

  message(text, state, status = "") {
    const m = $("style-message");
    m.textContent = text;
    m.dataset.state = state;
    m.dataset.status = String(status);
    m.className = state === "error" ? "error" : "";
  }

  async preview() {
    if (!this.detail) return;
    this.message("rendering…", "busy");
    try {
      const r = await call(`datasets/preview?${this.previewQuery()}`, {
        method: "POST",
        json: previewBody(this.detail, this.style()),
      });
      const blob = await r.blob();
      if (this.previewUrl) URL.revokeObjectURL(this.previewUrl);
      this.previewUrl = URL.createObjectURL(blob);
      const img = $("style-preview-img");
      img.src = this.previewUrl;
      img.hidden = false;
      await img.decode(); // "previewed" once the image is drawn
      this.message("preview rendered by MapServer (not saved)", "previewed");
    } catch (e) {
      this.message(`preview: ${e.message}`, "error", e.status || "");
    }
  }

  // bbox, width, height: the dataset's extent drawn as wide as the panel (the API's size limit
  // caps it; without an extent in the status the API takes the source's own).
  previewQuery() {
    const bbox = this.detail.status?.wgs84Bbox;
    const panel = $("editor-panel").clientWidth - 2; // the image's border
    const { width, height } = previewSize(bbox, panel, 2048);
    const q = new URLSearchParams({ width: String(width) });
    if (Array.isArray(bbox) && bbox.length === 4) {
      q.set("bbox", bbox.join(","));
      q.set("height", String(height));
    }
    return q;
  }

  async save() {
    if (!this.detail) return;
    const patch = mergePatch(this.detail.spec.style || {}, this.style());
    if (!Object.keys(patch).length) {
      this.message("nothing changed", "idle");
      return;
    }
    this.message("saving…", "busy");
    const headers = this.etag ? { "If-Match": this.etag } : {};
    try {
      const before = await this.beforeSave(this.detail);
      const r = await call(`datasets/${encodeURIComponent(this.detail.id)}`, {
        method: "PATCH",
        json: { style: patch },
        headers,
        contentType: "application/merge-patch+json",
      });
      this.detail = await r.json();
      this.etag = r.headers.get("ETag") || this.etag;
      this.message("saved; the service rolls out the new style", "saved", r.status);
      this.onSaved(this.detail.id, this.detail, before);
    } catch (e) {
      if (e.status === 412) {
        this.message("the dataset changed since you opened it: nothing was saved; open it again and redo the edit", "error", 412);
      } else {
        this.message(`save: ${e.message}`, "error", e.status || "");
      }
    }
  }
}
