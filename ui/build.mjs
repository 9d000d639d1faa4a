// Bundle the layer preview page: src/main.js (+ OpenLayers from node_modules) -> app.js, app.css,
// and src/index.html, into the facade's package (api/kms_api/ui_static/, not in git). Run by
// hack/ui.sh after `npm ci`; the output is generated, never edited by hand.
import { build } from "esbuild";
import { copyFileSync, mkdirSync, rmSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = resolve(process.argv[2] || join(here, "..", "api", "kms_api", "ui_static"));
rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });
await build({
  entryPoints: { app: join(here, "src", "main.js") },
  bundle: true,
  minify: true,
  format: "esm",
  target: ["es2020"],
  outdir: out,
  legalComments: "eof",
  logLevel: "warning",
});
copyFileSync(join(here, "src", "index.html"), join(out, "index.html"));
console.log(`ui bundle written to ${out}`);
