#!/usr/bin/env node
// Compile a contract of contracts/ with the pinned npm `solc` (its JS API, no download) and
// write contracts/artifacts/<Name>.json: { abi, bytecode, solcVersion } (plus deployedBytecode,
// the runtime code, for Multicall3, which the dev setup places with anvil_setCode).
//
// The output is deterministic (same source + same solc => same bytes): keys are sorted at
// every level, two-space indent, trailing newline, and the source is named by a relative
// path so the metadata hash inside the bytecode does not depend on where the repo lives.
//
// Usage: npm run build:contracts            (writes every committed artifact)
//        node contracts/build.js [--contract Name] [--out FILE]
//                                           (one contract, DemoToken by default; the tests use this)
"use strict";

const fs = require("node:fs");
const path = require("node:path");
const solc = require("solc");

const HERE = __dirname;
// Contracts whose artifact also carries the runtime code.
const WITH_RUNTIME = new Set(["Multicall3"]);

function sortKeys(value) {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value !== null && typeof value === "object") {
    const sorted = {};
    for (const key of Object.keys(value).sort()) sorted[key] = sortKeys(value[key]);
    return sorted;
  }
  return value;
}

function parseArgs(argv) {
  let contract = "DemoToken";
  let out = null;
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--out" && i + 1 < argv.length) {
      out = path.resolve(argv[++i]);
    } else if (argv[i] === "--contract" && i + 1 < argv.length) {
      contract = argv[++i];
    } else {
      console.error(
        `usage: node contracts/build.js [--contract Name] [--out FILE]\nunknown argument: ${argv[i]}`,
      );
      process.exit(2);
    }
  }
  return { contract, out: out || path.join(HERE, "artifacts", `${contract}.json`) };
}

// Imports name npm packages (`@openzeppelin/contracts/...`, pinned in package-lock.json); they
// are read from node_modules and keep that name, so the metadata hash is path independent.
function findImports(importPath) {
  const root = path.join(HERE, "..", "node_modules");
  const resolved = path.resolve(root, importPath);
  if (!resolved.startsWith(root + path.sep)) return { error: `import outside node_modules: ${importPath}` };
  try {
    return { contents: fs.readFileSync(resolved, "utf8") };
  } catch (error) {
    return { error: `cannot read ${importPath}: ${error.message} (run make node_modules)` };
  }
}

function compile(CONTRACT) {
  const SOURCE_NAME = `${CONTRACT}.sol`;
  const outputs = ["abi", "evm.bytecode.object"];
  if (WITH_RUNTIME.has(CONTRACT)) outputs.push("evm.deployedBytecode.object");
  const input = {
    language: "Solidity",
    sources: { [SOURCE_NAME]: { content: fs.readFileSync(path.join(HERE, SOURCE_NAME), "utf8") } },
    settings: {
      evmVersion: "cancun",
      optimizer: { enabled: true, runs: 200 },
      outputSelection: { [SOURCE_NAME]: { [CONTRACT]: outputs } },
    },
  };
  const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }));
  const diagnostics = output.errors || [];
  for (const d of diagnostics) console.error(d.formattedMessage || d.message);
  if (diagnostics.some((d) => d.severity === "error")) {
    throw new Error(`solc reported errors compiling ${SOURCE_NAME}`);
  }
  const contract = output.contracts[SOURCE_NAME][CONTRACT];
  const artifact = {
    abi: contract.abi,
    bytecode: `0x${contract.evm.bytecode.object}`,
    solcVersion: solc.version(),
  };
  if (WITH_RUNTIME.has(CONTRACT)) {
    artifact.deployedBytecode = `0x${contract.evm.deployedBytecode.object}`;
  }
  return artifact;
}

function main() {
  const { contract, out } = parseArgs(process.argv.slice(2));
  const artifact = compile(contract);
  fs.mkdirSync(path.dirname(out), { recursive: true });
  fs.writeFileSync(out, `${JSON.stringify(sortKeys(artifact), null, 2)}\n`);
  const shown = path.relative(process.cwd(), out);
  console.log(`wrote ${shown.startsWith("..") ? out : shown} (solc ${artifact.solcVersion})`);
}

main();
