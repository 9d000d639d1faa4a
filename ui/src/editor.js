// The style editor panel: fields from style.js, "Preview" renders through POST /datasets/preview
// (PNG in #style-preview-img), "Save" sends PATCH /datasets/{id} with If-Match (412: reload).
// Stable hooks for tests: #style-editor [name=...] inputs, #style-preview, #style-save,
// #style-message (data-state: idle|busy|previewed|saved|error), #style-preview-img.
import { call } from "./api.js";
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
  constructor({ onSaved }) {
    this.detail = null;
    this.etag = null;
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

  message(text, state) {
    const m = $("style-message");
    m.textContent = text;
    m.dataset.state = state;
    m.className = state === "error" ? "error" : "";
  }

  async preview() {
    if (!this.detail) return;
    this.message("rendering…", "busy");
    try {
      const r = await call("datasets/preview", { method: "POST", json: previewBody(this.detail, this.style()) });
      const blob = await r.blob();
      if (this.previewUrl) URL.revokeObjectURL(this.previewUrl);
      this.previewUrl = URL.createObjectURL(blob);
      const img = $("style-preview-img");
      img.src = this.previewUrl;
      img.hidden = false;
      this.message("preview rendered by MapServer (not saved)", "previewed");
    } catch (e) {
      const missing = e.status === 404 || e.status === 405;
      this.message(missing ? "this facade has no style preview (POST /datasets/preview)" : `preview: ${e.message}`, "error");
    }
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
      await call(`datasets/${encodeURIComponent(this.detail.id)}`, {
        method: "PATCH",
        json: { style: patch },
        headers,
        contentType: "application/merge-patch+json",
      });
      this.message("saved; the service rolls out the new style", "saved");
      this.onSaved(this.detail.id);
    } catch (e) {
      if (e.status === 412) this.message("the dataset changed meanwhile: reload it and edit again", "error");
      else if (e.status === 405) this.message("this facade cannot change datasets (PATCH)", "error");
      else this.message(`save: ${e.message}`, "error");
    }
  }
}
