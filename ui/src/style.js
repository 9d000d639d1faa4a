// The style editor's pure part: a dataset's style <-> form fields, the preview body (the same body
// as POST /datasets) and the JSON merge patch (RFC 7386) PATCH /datasets/{id} takes.

const DEFAULT_OUTLINE = "#404040";
export const RAMPS = ["viridis", "magma", "terrain", "greys", "blues", "rdylbu"];

// Form fields for a dataset: [{name, label, kind, value, ...}] (names are the inputs' names).
export function fieldsOf(type, style = {}) {
  const f = [];
  if (type === "raster") {
    f.push({ name: "colorRamp", label: "Colour ramp", kind: "select", options: RAMPS, value: style.colorRamp || "viridis" });
    f.push({ name: "classes", label: "Classes", kind: "number", min: 2, max: 64, value: style.classes ?? "" });
    f.push({ name: "rangeMin", label: "Range min", kind: "number", value: style.range?.min ?? "" });
    f.push({ name: "rangeMax", label: "Range max", kind: "number", value: style.range?.max ?? "" });
  } else {
    const classes = style.vectorClasses || [];
    if (classes.length) {
      classes.forEach((c, i) =>
        f.push({ name: `class-${i}-color`, label: `${c.name} (${style.classItem} = ${c.value})`, kind: "color", value: c.color }),
      );
    } else {
      f.push({ name: "color", label: "Fill colour", kind: "color", value: style.color || "#3388ff" });
    }
    f.push({ name: "outlineColor", label: "Outline colour", kind: "color", value: style.outlineColor || DEFAULT_OUTLINE });
  }
  f.push({ name: "opacity", label: "Opacity (%)", kind: "range", min: 0, max: 100, value: style.opacity ?? 100 });
  return f;
}

const num = (v) => (v === "" || v === null || v === undefined ? undefined : Number(v));

// The new style: the old one with the form's values (values: {name: string}).
export function styleFrom(type, old = {}, values = {}) {
  const s = structuredClone(old || {});
  const set = (k, v) => {
    if (v === undefined || Number.isNaN(v)) delete s[k];
    else s[k] = v;
  };
  if (type === "raster") {
    set("colorRamp", values.colorRamp || undefined);
    set("classes", num(values.classes));
    const lo = num(values.rangeMin);
    const hi = num(values.rangeMax);
    if (lo !== undefined && hi !== undefined) s.range = { min: lo, max: hi };
    else delete s.range;
  } else {
    if (s.vectorClasses?.length) {
      s.vectorClasses = s.vectorClasses.map((c, i) => ({ ...c, color: values[`class-${i}-color`] || c.color }));
    } else if (values.color) {
      s.color = values.color;
    }
    // the field shows a default outline when the style has none: unchanged, it stays unset
    const outline = values.outlineColor;
    if (outline && (old?.outlineColor !== undefined || outline !== DEFAULT_OUTLINE)) s.outlineColor = outline;
  }
  const opacity = num(values.opacity);
  set("opacity", opacity === 100 && old?.opacity === undefined ? undefined : opacity); // 100: the default
  return s;
}

const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);

// RFC 7386: the merge patch turning `a` into `b` (null removes a member; arrays are replaced).
export function mergePatch(a, b) {
  const patch = {};
  for (const k of Object.keys(a || {})) if (!(k in b)) patch[k] = null;
  for (const [k, v] of Object.entries(b)) {
    const old = a?.[k];
    if (isObject(v) && isObject(old)) {
      const sub = mergePatch(old, v);
      if (Object.keys(sub).length) patch[k] = sub;
    } else if (JSON.stringify(v) !== JSON.stringify(old)) {
      patch[k] = v;
    }
  }
  return patch;
}

// The body of POST /datasets/preview: the dataset as POST /datasets would create it, new style.
export function previewBody(detail, style) {
  return { ...structuredClone(detail.spec), id: detail.id, labels: detail.labels || {}, style };
}
