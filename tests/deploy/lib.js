// Helpers shared by the deployment checks: strict YAML loading and the units of server flags
// and Kubernetes quantities.
'use strict';

const fs = require('fs');
const YAML = require('yaml');

// Every document of a YAML file or string, as plain objects. Duplicate keys and syntax errors
// throw, naming the source.
function loadYamlDocuments(text, source) {
  const documents = YAML.parseAllDocuments(text, { uniqueKeys: true, prettyErrors: true });
  const objects = [];
  for (const document of documents) {
    if (document.errors.length > 0) {
      throw new Error(`${source}: ${document.errors.map((e) => e.message).join('; ')}`);
    }
    const object = document.toJS({ maxAliasCount: -1 });
    if (object !== null && object !== undefined) objects.push(object);
  }
  return objects;
}

function loadYamlFile(path) {
  return loadYamlDocuments(fs.readFileSync(path, 'utf8'), path);
}

// absl --flagfile contents (one --name=value per line, '#' comments) merged in order: later
// files win, as in the server.
function parseFlagFiles(texts) {
  const flags = {};
  for (const text of texts) {
    for (const raw of text.split('\n')) {
      const line = raw.trim();
      if (line === '' || line.startsWith('#')) continue;
      const match = /^--([A-Za-z0-9_]+)(?:=(.*))?$/.exec(line);
      if (!match) throw new Error(`flag file line '${line}' is not --name=value`);
      flags[match[1]] = match[2] === undefined ? 'true' : match[2];
    }
  }
  return flags;
}

// absl durations used by the server flags: 500ms, 30s, 10m, 1h, and sums such as 1m30s.
function parseDurationSeconds(text) {
  const units = { ms: 0.001, s: 1, m: 60, h: 3600 };
  let total = 0;
  let rest = text;
  while (rest.length > 0) {
    const match = /^(\d+(?:\.\d+)?)(ms|s|m|h)/.exec(rest);
    if (!match) throw new Error(`'${text}' is not a duration such as 30s or 10m`);
    total += Number(match[1]) * units[match[2]];
    rest = rest.slice(match[0].length);
  }
  return total;
}

// The server's byte sizes (server/byte_size.cc): a number with an optional K, M, G or T unit,
// binary, optionally followed by B or iB.
function parseByteSize(text) {
  const match = /^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*$/i.exec(text);
  if (!match) throw new Error(`'${text}' is not a byte size such as 4GiB`);
  const scale = { '': 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40 }[match[2].toUpperCase()];
  return Number(match[1]) * scale;
}

// Kubernetes resource quantities: plain, decimal (k, M, G, T) or binary (Ki, Mi, Gi, Ti) suffix,
// or milli (m).
function parseQuantity(value) {
  const match = /^(\d+(?:\.\d+)?)(m|k|M|G|T|Ki|Mi|Gi|Ti)?$/.exec(String(value));
  if (!match) throw new Error(`'${value}' is not a Kubernetes quantity`);
  const decimal = { m: 1e-3, k: 1e3, M: 1e6, G: 1e9, T: 1e12 };
  const binary = { Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40 };
  const suffix = match[2];
  const scale = suffix === undefined ? 1 : decimal[suffix] || binary[suffix];
  return Number(match[1]) * scale;
}

module.exports = {
  loadYamlDocuments,
  loadYamlFile,
  parseFlagFiles,
  parseDurationSeconds,
  parseByteSize,
  parseQuantity,
};
