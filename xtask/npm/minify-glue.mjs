// Trunk post_build hook: in release builds, minifies wasm-bindgen's JS glue with terser (about
// 7.9 KB -> 5.9 KB gzipped) and updates that file's integrity hash in index.html, which Trunk
// wrote for the unminified file. Trunk's own minifier cannot parse the glue.
// Debug builds (`trunk serve`) are left alone.
import { readFileSync, readdirSync, writeFileSync } from "node:fs";
import { createHash } from "node:crypto";
import { join } from "node:path";

if (process.env.TRUNK_PROFILE !== "release") {
  process.exit(0);
}
const { minify } = await import("terser");
const staging = process.env.TRUNK_STAGING_DIR;
const htmlPath = join(staging, "index.html");
let html = readFileSync(htmlPath, "utf8");
const integrity = (bytes) => "sha384-" + createHash("sha384").update(bytes).digest("base64");

for (const name of readdirSync(staging).filter((name) => name.endsWith(".js"))) {
  const path = join(staging, name);
  const source = readFileSync(path);
  const result = await minify(source.toString("utf8"), { module: true, compress: true, mangle: true });
  const minified = Buffer.from(result.code, "utf8");
  const before = integrity(source);
  if (html.includes(before)) {
    html = html.replaceAll(before, integrity(minified));
  } else if (html.includes("integrity")) {
    throw new Error(`index.html has no integrity hash for ${name}; refusing to change the file`);
  }
  writeFileSync(path, minified);
  console.log(`minified ${name}: ${source.length} -> ${minified.length} bytes`);
}
writeFileSync(htmlPath, html);
