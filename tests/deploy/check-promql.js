// Evaluates every PromQL expression streamkv ships against a live Prometheus that scrapes a
// running server, and fails unless each returns data (a non-empty result with at least one
// sample that is not NaN). Expressions come from:
//  - the Grafana dashboard: every panel target, every variable's label_values() selector (which
//    must also carry the variable's label); Grafana variables are replaced by concrete values;
//  - the alert rules: alerts are silent on a healthy server, so the check evaluates each alert's
//    condition without its comparison, `<expression> <op> <number>` -> `<expression>`, and
//    `absent(<selector>)` -> `<selector>`; an alert of any other form is an error;
//  - the prometheus-adapter rules: seriesQuery as is, metricsQuery with the adapter's templates
//    filled in as for one pod; both must return series labelled namespace and pod.
// Also requires the Prometheus server's own view to be healthy: the target up and every loaded
// rule evaluated without error. Failing queries are retried until they pass or TIMEOUT_SECONDS
// run out.
//
//   node check-promql.js REPO PROMETHEUS_URL NAMESPACE POD MODEL TIMEOUT_SECONDS
'use strict';

const fs = require('fs');
const http = require('http');
const path = require('path');
const lib = require('./lib');

const [repo, prometheus, namespace, pod, model, timeoutText] = process.argv.slice(2);
if (!timeoutText) {
  console.error(
    'usage: node check-promql.js REPO PROMETHEUS_URL NAMESPACE POD MODEL TIMEOUT_SECONDS',
  );
  process.exit(2);
}
const deadline = Date.now() + Number(timeoutText) * 1000;
const problems = []; // static problems: fail without querying

// ---- Expressions ------------------------------------------------------------------------------
const checks = []; // {source, expr, labels: required label names}

const grafanaValues = {
  __rate_interval: '1m',
  __interval: '15s',
  __range: '1h',
  namespace,
  pod,
  model,
};
function substitute(expr, source) {
  return expr.replace(/\$\{(\w+)(?::\w+)?\}|\$(\w+)/g, (whole, braced, plain) => {
    const name = braced || plain;
    if (!(name in grafanaValues)) {
      problems.push(`${source}: unknown Grafana variable ${whole}`);
      return whole;
    }
    return grafanaValues[name];
  });
}

const dashboardPath = path.join(repo, 'deploy/grafana/streamkv-dashboard.json');
const dashboard = JSON.parse(fs.readFileSync(dashboardPath, 'utf8'));
const variables = new Set(dashboard.templating.list.map((v) => v.name));
for (const variable of dashboard.templating.list) {
  if (variable.type !== 'query') continue;
  const query = typeof variable.query === 'string' ? variable.query : variable.query.query;
  const match = /^label_values\((.*),\s*(\w+)\)$/.exec(query);
  const source = `dashboard variable ${variable.name}`;
  if (!match) {
    problems.push(`${source}: expected label_values(<selector>, <label>), got ${query}`);
    continue;
  }
  checks.push({ source, expr: substitute(match[1], source), labels: [match[2]] });
}
const panelIds = new Set();
(function walk(panels) {
  for (const panel of panels) {
    const source = `dashboard panel ${panel.id} "${panel.title}"`;
    if (panelIds.has(panel.id)) problems.push(`${source}: duplicate panel id`);
    panelIds.add(panel.id);
    if (panel.type === 'row') {
      walk(panel.panels || []);
      continue;
    }
    const grid = panel.gridPos || {};
    if (!(grid.w > 0 && grid.h > 0 && grid.x >= 0 && grid.x + grid.w <= 24))
      problems.push(`${source}: bad gridPos`);
    if (!panel.datasource || panel.datasource.uid !== '${datasource}')
      problems.push(`${source}: datasource must be \${datasource}`);
    if (!panel.targets || panel.targets.length === 0) problems.push(`${source}: no queries`);
    const refIds = new Set();
    for (const target of panel.targets || []) {
      if (!target.refId || refIds.has(target.refId))
        problems.push(`${source}: missing or duplicate refId`);
      refIds.add(target.refId);
      checks.push({
        source: `${source} ${target.refId}`,
        expr: substitute(target.expr, source),
        labels: [],
      });
    }
  }
})(dashboard.panels);
for (const name of ['datasource', 'namespace', 'pod', 'model']) {
  if (!variables.has(name)) problems.push(`dashboard: variable ${name} is missing`);
}

// An alert's condition without its comparison (see the header).
function conditionExpression(expr) {
  const text = expr.trim();
  const absent = /^absent\((.*)\)$/s.exec(text);
  if (absent) return absent[1];
  const comparison =
    /^(.*?)\s*(?:==|!=|>=|<=|>|<)\s*(?:bool\s+)?-?\d+(?:\.\d+)?(?:e[+-]?\d+)?$/s.exec(text);
  return comparison ? comparison[1] : undefined;
}
const rules = lib.loadYamlFile(path.join(repo, 'deploy/prometheus/streamkv-alerts.yaml'))[0];
for (const group of rules.groups) {
  for (const rule of group.rules) {
    const source = `alert ${rule.alert || rule.record}`;
    const expr = rule.alert ? conditionExpression(rule.expr) : rule.expr;
    if (expr === undefined)
      problems.push(`${source}: not of the form '<expression> <op> <number>' or absent(...)`);
    else checks.push({ source, expr, labels: [] });
  }
}

const adapterPath = path.join(repo, 'deploy/k8s/prometheus-adapter/config.yaml');
for (const rule of lib.loadYamlFile(adapterPath)[0].rules) {
  const source = `prometheus-adapter ${rule.name.as}`;
  const series = rule.name.matches.replace(/^\^/, '').replace(/\$$/, '');
  const metricsQuery = rule.metricsQuery
    .split('<<.Series>>')
    .join(series)
    .split('<<.LabelMatchers>>')
    .join(`namespace="${namespace}",pod=~"${pod}"`)
    .split('<<.GroupBy>>')
    .join('namespace,pod');
  if (/<<|>>/.test(metricsQuery)) problems.push(`${source}: unknown template in metricsQuery`);
  checks.push({
    source: `${source} seriesQuery`,
    expr: rule.seriesQuery,
    labels: ['namespace', 'pod'],
  });
  checks.push({
    source: `${source} metricsQuery`,
    expr: metricsQuery,
    labels: ['namespace', 'pod'],
  });
}

if (problems.length > 0) {
  console.error(`check-promql: ${problems.length} problem(s):\n  ${problems.join('\n  ')}`);
  process.exit(1);
}

// ---- Prometheus -------------------------------------------------------------------------------
function get(apiPath) {
  return new Promise((resolve, reject) => {
    http
      .get(prometheus + apiPath, (response) => {
        let body = '';
        response.on('data', (chunk) => {
          body += chunk;
        });
        response.on('end', () => {
          try {
            resolve(JSON.parse(body));
          } catch (e) {
            reject(new Error(`HTTP ${response.statusCode}: ${body.slice(0, 200)}`));
          }
        });
      })
      .on('error', reject);
  });
}

// Why `check` fails now, or undefined when it passes.
async function evaluate(check) {
  const reply = await get(`/api/v1/query?query=${encodeURIComponent(check.expr)}`);
  if (reply.status !== 'success') return `error: ${reply.error}`;
  const { resultType, result } = reply.data;
  const samples = resultType === 'scalar' ? [{ metric: {}, value: result }] : result;
  if (!Array.isArray(samples) || samples.length === 0) return 'empty result';
  const numeric = samples.filter((s) => s.value && !Number.isNaN(Number(s.value[1])));
  if (numeric.length === 0) return 'only NaN samples';
  for (const label of check.labels) {
    if (!numeric.every((s) => label in s.metric)) return `series without label ${label}`;
  }
  return undefined;
}

async function serverHealth() {
  const failures = [];
  const targets = await get('/api/v1/targets?state=active');
  const active = targets.data.activeTargets.filter((t) => t.labels.job === 'streamkv');
  if (active.length === 0 || !active.every((t) => t.health === 'up')) {
    failures.push({
      source: 'Prometheus target',
      expr: 'job="streamkv"',
      why: `not up: ${JSON.stringify(active.map((t) => t.lastError))}`,
    });
  }
  const loaded = (await get('/api/v1/rules')).data.groups.flatMap((g) => g.rules);
  if (loaded.length !== rules.groups.reduce((n, g) => n + g.rules.length, 0)) {
    failures.push({ source: 'Prometheus rules', expr: '', why: `${loaded.length} rules loaded` });
  }
  for (const rule of loaded) {
    if (rule.health !== 'ok') {
      failures.push({
        source: `loaded rule ${rule.name}`,
        expr: rule.query,
        why: `health ${rule.health}: ${rule.lastError || 'not evaluated yet'}`,
      });
    }
  }
  return failures;
}

// Each check passes once it has returned data once (rates over the 1m window go NaN again a
// minute after the traffic); the server's health must hold in the same round as the last check.
async function main() {
  let pending = checks;
  let failures;
  for (;;) {
    failures = await serverHealth();
    const still = [];
    for (const check of pending) {
      const why = await evaluate(check);
      if (why) still.push({ ...check, why });
    }
    pending = still;
    failures.push(...still);
    if (failures.length === 0 || Date.now() > deadline) break;
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
  if (failures.length > 0) {
    console.error(
      `check-promql: ${failures.length} of ${checks.length} expressions (or server checks) never passed:`,
    );
    for (const f of failures) console.error(`  ${f.source}: ${f.why}\n    ${f.expr}`);
    process.exit(1);
  }
  const bySource = (prefix) => checks.filter((c) => c.source.startsWith(prefix)).length;
  console.log(
    `check-promql: all ${checks.length} expressions return data (dashboard ${bySource('dashboard')}, ` +
      `alerts ${bySource('alert')}, prometheus-adapter ${bySource('prometheus-adapter')}); ` +
      'target up, every rule evaluates',
  );
}

main().catch((e) => {
  console.error(`check-promql: ${e.stack || e}`);
  process.exit(1);
});
