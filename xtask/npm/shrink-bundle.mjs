// Trunk post_build hook: shrinks the release build's wasm and its JS glue together, then fixes the
// integrity hashes in index.html (Trunk wrote them for the files as wasm-bindgen left them).
// Debug builds (`trunk serve`) are left alone.
//
// 1. The glue's exported classes (wasm-streams' `IntoUnderlying*`, which Leptos' server functions
//    bring in and this app never uses) and `initSync` go, and with them every wasm export the
//    glue no longer calls.
// 2. wasm-opt (npm binaryen 132, never Debian's 108: its builds load as a blank page) optimises
//    for size and renames every import and export to one or two letters. wasm-bindgen's names
//    (`__wbg_setItem_cfa3cb31f271776a`, module `./wschat_bg.js`) carry a random-looking hash each,
//    which gzip cannot shrink, once in the wasm and once in the glue.
// 3. The glue is rewritten to the new names, checked against the wasm's actual imports and
//    exports, and minified with terser.
// 4. The CSS is minified with csso, and index.html loses its comments and the blank space
//    between tags.
//
// Trunk's own minifier (`minify = "on_release"`) is not used: it cannot parse wasm-bindgen's
// glue and warns so on every build, although the glue does get minified here.
//
// wasm-opt runs here rather than in Trunk (`data-wasm-opt="0"` in index.html) because exports
// can only be removed before it optimises, and a second -Oz over an optimised module gains
// nothing.
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { readFileSync, readdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

if (process.env.TRUNK_PROFILE !== "release") {
  process.exit(0);
}
const { parse } = await import("acorn");
const { minify } = await import("terser");
const csso = await import("csso");

const here = dirname(fileURLToPath(import.meta.url));
// By path, not from PATH: only the pinned binaryen may touch the wasm.
const wasmOpt = join(here, "node_modules", ".bin", "wasm-opt");
const WASM_OPT_VERSION = "version 132";
// The features wasm-bindgen's output uses (wasm-opt refuses it without them).
const FEATURES = [
  "--enable-bulk-memory",
  "--enable-nontrapping-float-to-int",
  "--enable-sign-ext",
  "--enable-mutable-globals",
  "--enable-reference-types",
  "--enable-multivalue",
];
// The smallest gzipped wasm of those measured on this app (README, Bundle size): flattening and
// re-looping the control flow first lets -O1 and -Os find more to fold; -Oz alone was about
// 1 KB larger gzipped (though smaller raw), -O3 and --converge larger still.
const PASSES = ["--flatten", "--rereloop", "-O1", "-Os"];

const staging = process.env.TRUNK_STAGING_DIR;
const only = (suffix) => {
  const names = readdirSync(staging).filter((name) => name.endsWith(suffix));
  if (names.length !== 1) {
    throw new Error(`expected one ${suffix} file in ${staging}, found ${names.length}`);
  }
  return join(staging, names[0]);
};
const gluePath = only(".js");
const wasmPath = only("_bg.wasm");
const cssPath = only(".css");
const htmlPath = join(staging, "index.html");
const glueBefore = readFileSync(gluePath);
const wasmBefore = readFileSync(wasmPath);
const cssBefore = readFileSync(cssPath);

const version = execFileSync(wasmOpt, ["--version"], { encoding: "utf8" });
if (!version.includes(WASM_OPT_VERSION)) {
  throw new Error(`${wasmOpt} is ${version.trim()}, not ${WASM_OPT_VERSION}: run cargo xtask setup`);
}

// 1. Drop what nobody calls.
let glue = dropUnusedExports(glueBefore.toString("utf8"));
const called = wasmMembers(glue);
const unused = readInterface(wasmBefore).exports.filter((name) => !called.has(name));

// 2. Optimise and rename. The minifying pass prints its renames as JSON.
const args = [wasmPath, "-o", wasmPath, ...FEATURES];
if (unused.length > 0) {
  args.push("--remove-exports", `--pass-arg=remove-exports@${unused.join(",")}`);
}
args.push(
  ...PASSES,
  "--minify-imports-and-exports-and-modules",
  "--strip-producers",
  "--strip-target-features",
);
const renames = JSON.parse(execFileSync(wasmOpt, args, { encoding: "utf8", maxBuffer: 1 << 24 }));
const wasmAfter = readFileSync(wasmPath);
const after = readInterface(wasmAfter);

// 3. The glue under the new names, checked, then minified.
glue = renameInGlue(glue, renames, after);
checkGlue(glue, after);
const minified = (await minify(glue, { module: true, compress: true, mangle: true })).code;
writeFileSync(gluePath, minified);

// 4. The CSS and the page.
const cssAfter = Buffer.from(csso.minify(cssBefore.toString("utf8")).css, "utf8");
writeFileSync(cssPath, cssAfter);
let html = readFileSync(htmlPath, "utf8");
for (const [before, afterBytes] of [
  [glueBefore, Buffer.from(minified, "utf8")],
  [wasmBefore, wasmAfter],
  [cssBefore, cssAfter],
]) {
  const old = integrity(before);
  if (html.includes(old)) {
    html = html.replaceAll(old, integrity(afterBytes));
  } else if (html.includes("integrity")) {
    throw new Error("index.html has no integrity hash for a file this hook changes");
  }
}
const htmlBefore = html.length;
html = minifyHtml(html);
writeFileSync(htmlPath, html);
console.log(
  `shrank the glue ${glueBefore.length} -> ${minified.length} bytes, the wasm ` +
    `${wasmBefore.length} -> ${wasmAfter.length} bytes (${unused.length} unused exports removed: ` +
    `${unused.join(", ") || "none"}), the CSS ${cssBefore.length} -> ${cssAfter.length} bytes ` +
    `and index.html ${htmlBefore} -> ${html.length} bytes`,
);

/**
 * Drops comments and the blank space between tags, and blank lines in scripts. Only for a page
 * like this one, with no text between its tags (where a space can matter).
 */
function minifyHtml(source) {
  return source
    .split(/(<script\b[\s\S]*?<\/script>)/)
    .map((part, index) =>
      index % 2 === 1
        ? part.replace(/\n\s*\n/g, "\n")
        : part.replace(/<!--[\s\S]*?-->/g, "").replace(/>\s+</g, "><").trim(),
    )
    .join("");
}

function integrity(bytes) {
  return "sha384-" + createHash("sha384").update(bytes).digest("base64");
}

function parseModule(source) {
  return parse(source, { ecmaVersion: "latest", sourceType: "module" });
}

/** Every node under `node`, depth first. */
function* nodes(node) {
  if (node === null || typeof node !== "object") return;
  if (Array.isArray(node)) {
    for (const child of node) yield* nodes(child);
    return;
  }
  if (typeof node.type === "string") yield node;
  for (const [key, value] of Object.entries(node)) {
    if (key !== "type" && value !== null && typeof value === "object") yield* nodes(value);
  }
}

/** `source` with each `[start, end, text]` edit applied (edits must not overlap). */
function edit(source, edits) {
  let result = source;
  for (const [start, end, text] of [...edits].sort((a, b) => b[0] - a[0])) {
    result = result.slice(0, start) + text + result.slice(end);
  }
  return result;
}

/**
 * Removes the exported classes (with their `Symbol.dispose` line and their finalization
 * registry) and `initSync`: Trunk's loader calls only the default export.
 */
function dropUnusedExports(source) {
  const program = parseModule(source);
  const classes = new Set();
  const edits = [];
  for (const statement of program.body) {
    if (
      statement.type === "ExportNamedDeclaration" &&
      statement.declaration?.type === "ClassDeclaration"
    ) {
      classes.add(statement.declaration.id.name);
      edits.push([statement.start, statement.end, ""]);
    }
  }
  const mentionsClass = (node) =>
    [...nodes(node)].some((child) => child.type === "Identifier" && classes.has(child.name));
  for (const statement of program.body) {
    if (statement.type === "IfStatement" && mentionsClass(statement)) {
      edits.push([statement.start, statement.end, ""]);
    }
    if (statement.type === "VariableDeclaration") {
      const names = statement.declarations.map((declaration) => declaration.id.name);
      if (names.every((name) => [...classes].some((cls) => name === `${cls}Finalization`))) {
        edits.push([statement.start, statement.end, ""]);
      }
    }
    if (statement.type === "ExportNamedDeclaration" && statement.declaration === null) {
      const kept = statement.specifiers.filter((specifier) => specifier.exported.name === "default");
      const text = kept.map((specifier) => source.slice(specifier.start, specifier.end));
      edits.push([statement.start, statement.end, `export { ${text.join(", ")} };`]);
    }
  }
  const result = edit(source, edits);
  for (const cls of classes) {
    if (new RegExp(`\\b${cls}\\b`).test(result)) {
      throw new Error(`the glue still mentions ${cls} after its removal`);
    }
  }
  return result;
}

/** The `wasm.NAME` accesses in the glue (`wasm` holds the instance's exports). */
function wasmMembers(source) {
  const names = new Set();
  for (const node of nodes(parseModule(source))) {
    if (node.type === "MemberExpression" && node.object.type === "Identifier" && node.object.name === "wasm") {
      if (node.computed) throw new Error("the glue indexes the wasm exports with a computed name");
      names.add(node.property.name);
    }
  }
  return names;
}

/** The object literal the glue hands to the wasm as its imports: `{ MODULE: OBJECT, ... }`. */
function importObjects(program) {
  const getImports = program.body.find(
    (statement) => statement.type === "FunctionDeclaration" && statement.id.name === "__wbg_get_imports",
  );
  if (!getImports) throw new Error("the glue has no __wbg_get_imports");
  const consts = new Map();
  for (const statement of getImports.body.body) {
    if (statement.type === "VariableDeclaration") {
      for (const declaration of statement.declarations) consts.set(declaration.id.name, declaration.init);
    }
  }
  const returned = getImports.body.body.find((statement) => statement.type === "ReturnStatement");
  const modules = [];
  for (const property of returned.argument.properties) {
    const key = property.key.type === "Literal" ? property.key.value : property.key.name;
    if (key === "__proto__") continue;
    const object = property.value.type === "Identifier" ? consts.get(property.value.name) : property.value;
    if (object?.type !== "ObjectExpression") throw new Error(`imports of ${key} are not an object literal`);
    modules.push({ key, property, object });
  }
  return modules;
}

function propertyName(property) {
  return property.key.type === "Literal" ? property.key.value : property.key.name;
}

/** The glue with the wasm's new import and export names; imports the wasm dropped go too. */
function renameInGlue(source, renames, wasm) {
  const program = parseModule(source);
  const exportNames = new Map(renames.exports.map(([from, to]) => [from, to]));
  const importNames = new Map(renames.imports.map(([module, from, to]) => [`${module}\0${from}`, to]));
  const importModules = new Set(wasm.imports.map(({ module }) => module));
  if (importModules.size !== 1) throw new Error(`expected one import module, found ${[...importModules]}`);
  const [newModule] = importModules;
  const edits = [];
  // Imports the wasm no longer has (optimised away: nothing calls them any more) go whole.
  const removed = [];
  for (const { key, property, object } of importObjects(program)) {
    edits.push([property.key.start, property.key.end, JSON.stringify(newModule)]);
    for (const entry of object.properties) {
      const name = propertyName(entry);
      if (name === "__proto__") continue;
      const to = importNames.get(`${key}\0${name}`);
      if (to === undefined) {
        removed.push([entry.start, source[entry.end] === "," ? entry.end + 1 : entry.end]);
      } else {
        edits.push([entry.key.start, entry.key.end, JSON.stringify(to)]);
      }
    }
  }
  const isRemoved = (node) => removed.some(([start, end]) => node.start >= start && node.end <= end);
  for (const node of nodes(program)) {
    if (
      node.type === "MemberExpression" &&
      node.object.type === "Identifier" &&
      node.object.name === "wasm" &&
      !isRemoved(node)
    ) {
      const to = exportNames.get(node.property.name);
      if (to === undefined) throw new Error(`wasm-opt did not rename the export ${node.property.name}`);
      edits.push([node.property.start, node.property.end, to]);
    }
  }
  return edit(source, [...edits, ...removed.map(([start, end]) => [start, end, ""])]);
}

/** Fails unless the glue provides exactly the wasm's imports and uses only its exports. */
function checkGlue(source, wasm) {
  const exported = new Set(wasm.exports);
  for (const name of wasmMembers(source)) {
    if (!exported.has(name)) throw new Error(`the glue uses wasm.${name}, which the wasm does not export`);
  }
  const provided = new Set();
  for (const { key, object } of importObjects(parseModule(source))) {
    for (const entry of object.properties) provided.add(`${key}\0${propertyName(entry)}`);
  }
  for (const { module, name } of wasm.imports) {
    if (!provided.has(`${module}\0${name}`)) throw new Error(`the glue does not provide ${module}.${name}`);
  }
}

/** The import and export names of a wasm module, read from its binary. */
function readInterface(bytes) {
  let at = 8;
  const u32 = () => {
    let result = 0;
    let shift = 0;
    let byte;
    do {
      byte = bytes[at++];
      result |= (byte & 0x7f) << shift;
      shift += 7;
    } while (byte & 0x80);
    return result >>> 0;
  };
  const name = () => {
    const length = u32();
    const text = bytes.subarray(at, at + length).toString("utf8");
    at += length;
    return text;
  };
  const limits = () => {
    const flags = bytes[at++];
    u32();
    if (flags & 1) u32();
  };
  const imports = [];
  const exports = [];
  while (at < bytes.length) {
    const id = bytes[at++];
    const size = u32();
    const end = at + size;
    if (id === 2) {
      for (let count = u32(); count > 0; count--) {
        const module = name();
        const field = name();
        const kind = bytes[at++];
        if (kind === 0) u32();
        else if (kind === 1) (at++, limits());
        else if (kind === 2) limits();
        else if (kind === 3) at += 2;
        else throw new Error(`unknown import kind ${kind}`);
        imports.push({ module, name: field });
      }
    } else if (id === 7) {
      for (let count = u32(); count > 0; count--) {
        exports.push(name());
        at++;
        u32();
      }
    }
    at = end;
  }
  return { imports, exports };
}
