// Validates the rendered Kubernetes manifests (kustomize output, one file per kustomization):
//  1. schema: every object against its Kubernetes OpenAPI schema (kubernetes-models) or, for
//     ServiceMonitor and PrometheusRule, the Prometheus Operator CRD schema
//     (@kubernetes-models/prometheus-operator); an unknown apiVersion/kind is an error;
//  2. unknown fields: every object type-checked by TypeScript against the same models' generated
//     types, which rejects fields the schema does not define (the JSON schemas allow them);
//  3. consistency of each deployable variant: ports, probes, grace period vs drain deadline,
//     downward-API identity, GPU vs --device, checkpoint volume, Service/ServiceMonitor/HPA/PDB
//     selectors and names, the prometheus-adapter metrics, the PrometheusRule vs the rule file.
// Writes each variant's flag files and server arguments to OUT/<variant>/ for check-k8s.sh.
//
//   node validate-manifests.js REPO RENDERED_DIR OUT_DIR
'use strict';

const fs = require('fs');
const path = require('path');
const util = require('util');
const ts = require('typescript');
const lib = require('./lib');

const [repo, renderedDir, outDir] = process.argv.slice(2);
if (!outDir) {
  console.error('usage: node validate-manifests.js REPO RENDERED_DIR OUT_DIR');
  process.exit(2);
}
fs.mkdirSync(outDir, { recursive: true });

// Kustomizations rendered by check-k8s.sh; the first three are deployable server variants.
const VARIANTS = ['base', 'cpu', 'gpu'];
const RENDERED = [...VARIANTS, 'prometheus-adapter', 'grafana'];
const FLAGS_MOUNT = '/etc/streamkv';
const IMAGE_MODEL_DIR = '/opt/streamkv/models/';
const HEALTH_SERVICE = 'streamkv.v1.StreamKv';
const JOB = 'streamkv'; // the job label the alert rules and dashboard select on
const SHUTDOWN_CLOSE_SECONDS = 2; // the server closes within 2 s after the drain deadline
const CHECKPOINT_LOAD_SECONDS = 600; // startup allowance for a real (4.8 GB) checkpoint

const errors = [];
function fail(where, message) {
  errors.push(`${where}: ${message}`);
}

// ---- 1. Schemas --------------------------------------------------------------------------------
function modelModule(apiVersion, kind) {
  if (apiVersion === 'monitoring.coreos.com/v1') {
    return `@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/${kind}`;
  }
  const [group, version] = apiVersion.includes('/') ? apiVersion.split('/') : ['', apiVersion];
  return group === ''
    ? `kubernetes-models/v1/${kind}`
    : `kubernetes-models/${group}/${version}/${kind}`;
}

function describe(object) {
  return `${object.kind} ${object.metadata && object.metadata.name}`;
}

const documents = {}; // rendered name -> objects
const typeCheckSources = []; // {where, module, kind, object}
for (const name of RENDERED) {
  const file = path.join(renderedDir, `${name}.yaml`);
  documents[name] = lib.loadYamlFile(file);
  if (documents[name].length === 0) fail(name, 'renders no objects');
  for (const object of documents[name]) {
    const where = `${name}: ${describe(object)}`;
    if (!object.apiVersion || !object.kind) {
      fail(where, 'has no apiVersion or kind');
      continue;
    }
    const module = modelModule(object.apiVersion, object.kind);
    let Model;
    try {
      Model = require(module)[object.kind];
    } catch (e) {
      fail(where, `no schema for ${object.apiVersion} ${object.kind} (${module})`);
      continue;
    }
    try {
      new Model(object).validate();
    } catch (e) {
      fail(where, `schema: ${e.message}`);
    }
    typeCheckSources.push({ where, module, kind: object.kind, object });
  }
}

// ---- 2. Unknown fields (TypeScript excess-property checks) -------------------------------------
function typeCheck(sources) {
  const modelsRoot = path.dirname(path.dirname(require.resolve('kubernetes-models/package.json')));
  const lines = [];
  const owners = []; // line index -> source
  sources.forEach((source, i) => {
    const text =
      `import type { I${source.kind} as T${i} } from ${JSON.stringify(source.module)};\n` +
      `export const object${i}: T${i} = ${JSON.stringify(source.object, null, 2)};\n`;
    for (const line of text.split('\n')) {
      lines.push(line);
      owners.push(source);
    }
  });
  const file = path.join(outDir, 'manifests.ts');
  fs.writeFileSync(file, lines.join('\n'));
  const program = ts.createProgram([file], {
    strict: true,
    noEmit: true,
    skipLibCheck: true,
    types: [],
    lib: ['lib.es2020.d.ts'],
    moduleResolution: ts.ModuleResolutionKind.Node10,
    baseUrl: modelsRoot,
    paths: { '*': ['*'] },
  });
  for (const diagnostic of ts.getPreEmitDiagnostics(program)) {
    const message = ts.flattenDiagnosticMessageText(diagnostic.messageText, ' ');
    if (diagnostic.file && diagnostic.file.fileName === file) {
      const { line } = diagnostic.file.getLineAndCharacterOfPosition(diagnostic.start);
      fail(owners[line].where, `fields: ${message} (line: ${lines[line].trim()})`);
    } else {
      fail('type check', message);
    }
  }
}
typeCheck(typeCheckSources);

// ---- 3. Consistency of each variant ----------------------------------------------------------
function only(objects, kind, where) {
  const found = objects.filter((o) => o.kind === kind);
  if (found.length !== 1) fail(where, `expected one ${kind}, found ${found.length}`);
  return found[0];
}

function matches(selector, labels) {
  return Object.entries(selector || {}).every(([k, v]) => labels && labels[k] === v);
}

// The preStop hook's sleep in seconds (0 without one); any other hook is an error.
function preStopSeconds(container, where) {
  const hook = container.lifecycle && container.lifecycle.preStop;
  if (!hook) return 0;
  const command = hook.exec && hook.exec.command;
  if (command && command.length === 2 && command[0] === 'sleep' && /^\d+$/.test(command[1])) {
    return Number(command[1]);
  }
  if (hook.sleep && Number.isInteger(hook.sleep.seconds)) return hook.sleep.seconds;
  fail(where, `preStop must be a sleep, not ${JSON.stringify(hook)}`);
  return 0;
}

const adapterConfig = (() => {
  const configMap = only(documents['prometheus-adapter'], 'ConfigMap', 'prometheus-adapter');
  return (
    configMap && lib.loadYamlDocuments(configMap.data['config.yaml'], 'adapter config.yaml')[0]
  );
})();
const adapterMetrics = new Set(
  ((adapterConfig && adapterConfig.rules) || []).map((r) => r.name && r.name.as),
);
for (const rule of (adapterConfig && adapterConfig.rules) || []) {
  const where = `prometheus-adapter: rule ${rule.name && rule.name.as}`;
  const overrides = (rule.resources && rule.resources.overrides) || {};
  if (
    !overrides.namespace ||
    overrides.namespace.resource !== 'namespace' ||
    !overrides.pod ||
    overrides.pod.resource !== 'pod'
  ) {
    fail(where, 'must map the namespace and pod labels to their resources (per-pod metric)');
  }
  for (const part of ['<<.LabelMatchers>>', '<<.GroupBy>>']) {
    if (!String(rule.metricsQuery).includes(part)) fail(where, `metricsQuery lacks ${part}`);
  }
  if (!String(rule.seriesQuery).includes(`job="${JOB}"`))
    fail(where, `seriesQuery must select job="${JOB}"`);
}

const dockerUser = (() => {
  const match = /^USER\s+(\d+)(?::(\d+))?\s*$/m.exec(
    fs.readFileSync(path.join(repo, 'Dockerfile'), 'utf8'),
  );
  return match ? Number(match[1]) : undefined;
})();

const rulesFile = lib.loadYamlFile(path.join(repo, 'deploy/prometheus/streamkv-alerts.yaml'))[0];

function checkVariant(variant) {
  const objects = documents[variant];
  const where = variant;
  const deployment = only(objects, 'Deployment', where);
  if (!deployment) return;
  const podSpec = deployment.spec.template.spec;
  const podLabels = deployment.spec.template.metadata.labels;
  if (!matches(deployment.spec.selector.matchLabels, podLabels))
    fail(where, 'Deployment selector does not match its pod labels');
  const container = podSpec.containers.find((c) => c.name === 'server');
  if (!container || podSpec.containers.length !== 1) {
    fail(where, 'the pod must have exactly one container, "server"');
    return;
  }

  // Flags: --flagfile args naming keys of the ConfigMap mounted at FLAGS_MOUNT.
  const mount = (container.volumeMounts || []).find((m) => m.mountPath === FLAGS_MOUNT);
  const volume = mount && (podSpec.volumes || []).find((v) => v.name === mount.name);
  const configMap =
    volume &&
    volume.configMap &&
    objects.find((o) => o.kind === 'ConfigMap' && o.metadata.name === volume.configMap.name);
  if (!configMap) {
    fail(where, `no ConfigMap of this variant is mounted at ${FLAGS_MOUNT}`);
    return;
  }
  const flagTexts = [];
  const args = container.args || [];
  for (const arg of args) {
    const match = /^--flagfile=(.*)$/.exec(arg);
    if (!match) continue;
    const key = path.posix.relative(FLAGS_MOUNT, match[1]);
    if (!(key in configMap.data))
      fail(where, `${arg}: ConfigMap ${configMap.metadata.name} has no key ${key}`);
    else flagTexts.push(configMap.data[key]);
  }
  if (flagTexts.length === 0) fail(where, 'the server gets no --flagfile');
  let flags;
  try {
    flags = lib.parseFlagFiles(flagTexts);
  } catch (e) {
    fail(where, e.message);
    return;
  }
  const port = (address) => Number(String(address).split(':').pop());
  const grpcPort = port(flags.listen);
  const metricsPort = port(flags.metrics_listen);
  const containerPorts = Object.fromEntries(
    (container.ports || []).map((p) => [p.name, p.containerPort]),
  );
  if (containerPorts.grpc !== grpcPort)
    fail(where, `containerPort grpc ${containerPorts.grpc} != --listen port ${grpcPort}`);
  if (containerPorts.metrics !== metricsPort)
    fail(
      where,
      `containerPort metrics ${containerPorts.metrics} != --metrics_listen port ${metricsPort}`,
    );

  // Probes: native gRPC health on the server's port; readiness on the service that turns
  // NOT_SERVING when draining.
  for (const probe of ['startupProbe', 'readinessProbe', 'livenessProbe']) {
    const spec = container[probe];
    if (!spec || !spec.grpc) fail(where, `${probe} must be a gRPC health probe`);
    else if (spec.grpc.port !== grpcPort)
      fail(where, `${probe} probes port ${spec.grpc.port}, the server listens on ${grpcPort}`);
  }
  if (
    container.readinessProbe &&
    container.readinessProbe.grpc &&
    container.readinessProbe.grpc.service !== HEALTH_SERVICE
  ) {
    fail(where, `readinessProbe must ask for service ${HEALTH_SERVICE}`);
  }
  const device = flags.device || 'cpu';
  const startup = container.startupProbe || {};
  const startupSeconds = (startup.periodSeconds || 10) * (startup.failureThreshold || 3);
  const realCheckpoint = flags.model_dir && !flags.model_dir.startsWith(IMAGE_MODEL_DIR);
  if (realCheckpoint && startupSeconds < CHECKPOINT_LOAD_SECONDS) {
    fail(
      where,
      `startupProbe allows ${startupSeconds} s; loading a 4.8 GB checkpoint needs ${CHECKPOINT_LOAD_SECONDS} s`,
    );
  }

  // Shutdown: preStop + drain deadline + close must fit in the grace period.
  const drain = lib.parseDurationSeconds(flags.drain_timeout || '10s');
  const preStop = preStopSeconds(container, where);
  const grace =
    podSpec.terminationGracePeriodSeconds === undefined
      ? 30
      : podSpec.terminationGracePeriodSeconds;
  if (!(grace > preStop + drain + SHUTDOWN_CLOSE_SECONDS)) {
    fail(
      where,
      `terminationGracePeriodSeconds ${grace} must exceed preStop ${preStop} + --drain_timeout ${drain} + ${SHUTDOWN_CLOSE_SECONDS} s`,
    );
  }

  // Identity for session affinity: POD_NAME and POD_IP from the downward API.
  const env = Object.fromEntries((container.env || []).map((e) => [e.name, e]));
  for (const [name, field] of [
    ['POD_NAME', 'metadata.name'],
    ['POD_IP', 'status.podIP'],
  ]) {
    const source = env[name] && env[name].valueFrom && env[name].valueFrom.fieldRef;
    if (!source || source.fieldPath !== field)
      fail(where, `env ${name} must come from fieldRef ${field}`);
  }

  // Device and resources.
  const resources = container.resources || {};
  const gpus = Number((resources.limits || {})['nvidia.com/gpu'] || 0);
  if (device.startsWith('cuda') && gpus !== 1)
    fail(where, `--device=${device} needs limits nvidia.com/gpu: 1`);
  if (!device.startsWith('cuda') && gpus !== 0)
    fail(where, `--device=${device} must not request GPUs`);
  if (!resources.requests || !resources.requests.cpu || !resources.requests.memory)
    fail(where, 'the server needs cpu and memory requests');
  const memoryLimit =
    resources.limits && resources.limits.memory && lib.parseQuantity(resources.limits.memory);
  if (!memoryLimit) fail(where, 'the server needs a memory limit');
  if (device === 'cpu') {
    // The CPU default budget is a share of the node's memory, not the pod's.
    if (!flags.kv_budget) fail(where, 'a CPU variant must set --kv_budget');
    else if (memoryLimit && lib.parseByteSize(flags.kv_budget) + 2 ** 30 > memoryLimit) {
      fail(
        where,
        `--kv_budget=${flags.kv_budget} plus 1 GiB for the model exceeds the memory limit ${resources.limits.memory}`,
      );
    }
  }

  // The checkpoint: the image's tiny model, or a read-only volume from a PVC of this variant.
  if (realCheckpoint) {
    const modelMount = (container.volumeMounts || []).find((m) => m.mountPath === flags.model_dir);
    const modelVolume = modelMount && podSpec.volumes.find((v) => v.name === modelMount.name);
    const claim = modelVolume && modelVolume.persistentVolumeClaim;
    if (!modelMount || !modelMount.readOnly || !claim || !claim.readOnly) {
      fail(
        where,
        `--model_dir=${flags.model_dir} must be a read-only mount of a PersistentVolumeClaim`,
      );
    } else {
      const pvc = objects.find(
        (o) => o.kind === 'PersistentVolumeClaim' && o.metadata.name === claim.claimName,
      );
      if (!pvc) fail(where, `PersistentVolumeClaim ${claim.claimName} is not part of this variant`);
      else if (!pvc.spec.accessModes.includes('ReadOnlyMany'))
        fail(where, `PVC ${claim.claimName} must be ReadOnlyMany (every replica mounts it)`);
    }
  }

  // Image and user.
  const [imageName, tag] = container.image.split(':');
  if (imageName !== 'streamkv/streamkv-server' || !tag)
    fail(where, `image ${container.image} must be streamkv/streamkv-server:<tag>`);
  const expectedSuffix = device.startsWith('cuda') ? '-cuda' : '-cpu';
  if (tag && !tag.endsWith(expectedSuffix))
    fail(where, `--device=${device} needs an image tag ending in ${expectedSuffix}, not ${tag}`);
  const security = podSpec.securityContext || {};
  if (!security.runAsNonRoot || security.runAsUser !== dockerUser) {
    fail(where, `pod must run as non-root user ${dockerUser} (the Dockerfile's USER)`);
  }

  // Services: select the pods, target named container ports; one headless for per-pod routing.
  const services = objects.filter((o) => o.kind === 'Service');
  for (const service of services) {
    const at = `${where}: Service ${service.metadata.name}`;
    if (
      !matches(service.spec.selector, podLabels) ||
      Object.keys(service.spec.selector || {}).length === 0
    )
      fail(at, 'does not select the server pods');
    for (const p of service.spec.ports) {
      if (!(p.targetPort in containerPorts))
        fail(at, `targetPort ${p.targetPort} is not a named container port`);
    }
  }
  if (
    !services.some(
      (s) => s.spec.clusterIP === 'None' && s.spec.ports.some((p) => p.targetPort === 'grpc'),
    )
  ) {
    fail(where, 'needs a headless Service for the gRPC port (per-pod addresses)');
  }

  // ServiceMonitor -> a Service with a metrics port; its job label is JOB.
  const monitor = only(objects, 'ServiceMonitor', where);
  if (monitor) {
    const scraped = services.filter((s) =>
      matches(monitor.spec.selector.matchLabels, s.metadata.labels),
    );
    const endpoint = monitor.spec.endpoints[0] || {};
    if (scraped.length !== 1)
      fail(where, `ServiceMonitor selects ${scraped.length} Services, expected 1`);
    else {
      if (
        !scraped[0].spec.ports.some((p) => p.name === endpoint.port && p.targetPort === 'metrics')
      ) {
        fail(
          where,
          `ServiceMonitor endpoint port ${endpoint.port} is not the Service's metrics port`,
        );
      }
      const job = monitor.spec.jobLabel
        ? scraped[0].metadata.labels[monitor.spec.jobLabel]
        : scraped[0].metadata.name;
      if (job !== JOB)
        fail(where, `scraped series get job="${job}", the rules and dashboard expect job="${JOB}"`);
    }
  }

  // PrometheusRule = the rule file.
  const rule = only(objects, 'PrometheusRule', where);
  if (rule && !util.isDeepStrictEqual(rule.spec, rulesFile)) {
    fail(where, 'PrometheusRule spec differs from deploy/prometheus/streamkv-alerts.yaml');
  }

  // HPA on the adapter's per-pod metrics; PDB over the same pods.
  const hpa = only(objects, 'HorizontalPodAutoscaler', where);
  if (hpa) {
    const target = hpa.spec.scaleTargetRef;
    if (target.kind !== 'Deployment' || target.name !== deployment.metadata.name)
      fail(where, 'HPA does not scale the Deployment');
    for (const metric of hpa.spec.metrics) {
      if (metric.type !== 'Pods') {
        fail(where, `HPA metric type ${metric.type}: expected per-pod custom metrics`);
        continue;
      }
      const name = metric.pods.metric.name;
      if (!adapterMetrics.has(name))
        fail(where, `HPA metric ${name} is not served by the prometheus-adapter rules`);
      const value = lib.parseQuantity(metric.pods.target.averageValue);
      if (name === 'streamkv_sessions_live' && !(value < Number(flags.max_sessions || 64))) {
        fail(
          where,
          `HPA sessions target ${value} must be below --max_sessions ${flags.max_sessions}`,
        );
      }
      if (name === 'streamkv_kv_cache_utilization' && !(value > 0 && value < 1))
        fail(where, 'KV utilisation target must be in (0, 1)');
    }
    if (!(hpa.spec.minReplicas >= 2))
      fail(where, 'HPA minReplicas must be >= 2 so the PDB leaves a pod serving');
  }
  const pdb = only(objects, 'PodDisruptionBudget', where);
  if (pdb && !matches(pdb.spec.selector.matchLabels, podLabels))
    fail(where, 'PDB does not select the server pods');

  // For check-k8s.sh: the flag files and the server's arguments, the mount path made local.
  const variantDir = path.join(outDir, variant);
  fs.mkdirSync(variantDir, { recursive: true });
  for (const [key, text] of Object.entries(configMap.data))
    fs.writeFileSync(path.join(variantDir, key), text);
  fs.writeFileSync(
    path.join(variantDir, 'args'),
    args.map((a) => a.split(FLAGS_MOUNT + '/').join(variantDir + '/')).join('\n') + '\n',
  );
  fs.writeFileSync(
    path.join(variantDir, 'expect'),
    [
      `device=${device}`,
      `model_dir=${flags.model_dir || ''}`,
      `model_name=${flags.model_name || ''}`,
      `shutdown_budget_s=${grace - preStop}`,
      '',
    ].join('\n'),
  );
}

for (const variant of VARIANTS) checkVariant(variant);

// The dashboard ConfigMap carries the dashboard JSON unchanged.
const dashboard = only(documents.grafana, 'ConfigMap', 'grafana');
const dashboardFile = fs.readFileSync(
  path.join(repo, 'deploy/grafana/streamkv-dashboard.json'),
  'utf8',
);
if (dashboard && dashboard.data['streamkv-dashboard.json'] !== dashboardFile)
  fail('grafana', 'ConfigMap does not hold deploy/grafana/streamkv-dashboard.json');

if (errors.length > 0) {
  console.error(`validate-manifests: ${errors.length} problem(s):\n  ${errors.join('\n  ')}`);
  process.exit(1);
}
const count = RENDERED.reduce((n, r) => n + documents[r].length, 0);
console.log(
  `validate-manifests: ${count} objects in ${RENDERED.length} kustomizations pass schema, field and consistency checks`,
);
