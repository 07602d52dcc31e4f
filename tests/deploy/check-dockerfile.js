// Lints the Dockerfile with two linters and checks what they cannot:
//  - dockerfile-utils (the parser and validator behind VS Code's Docker support): syntax,
//    instruction arguments, flags, stage names; errors and warnings both fail;
//  - dockerfilelint: best practices (apt-get flags and cleanup, sudo, ports, ...); its
//    missing_tag rule is off (.dockerfilelintrc), see below;
//  - every variant (X with stages toolchain-X and runtime-X) resolves `FROM <...-${VARIANT}>`
//    to a stage; every external base image, global ARG defaults substituted, has a tag that is
//    not `latest`;
//  - the final stage runs as a numeric non-root USER, has an exec-form ENTRYPOINT and EXPOSEs
//    the gRPC and metrics ports of deploy/k8s/base/server.flags;
//  - .dockerignore keeps build trees out of the context but not what the build reads: the
//    deploy/ files the Dockerfile names and the directories CMakeLists.txt adds.
// With --command=VARIANT, prints that variant's ENTRYPOINT + CMD instead, one word per line.
//
//   node check-dockerfile.js REPO [--command=VARIANT]
'use strict';

const fs = require('fs');
const path = require('path');
const dockerfileUtils = require('dockerfile-utils');
const dockerfilelint = require('dockerfilelint');
const lib = require('./lib');

const [repo, option] = process.argv.slice(2);
if (!repo) {
  console.error('usage: node check-dockerfile.js REPO [--command=VARIANT]');
  process.exit(2);
}
const dockerfile = path.join(repo, 'Dockerfile');
const content = fs.readFileSync(dockerfile, 'utf8');
const problems = [];

// Instructions with continuation lines joined: {line, keyword, args}.
const instructions = [];
let pending = null;
content.split('\n').forEach((raw, index) => {
  const line = raw.trim();
  if (pending === null && (line === '' || line.startsWith('#'))) return;
  if (pending === null) pending = { line: index + 1, text: '' };
  if (line.startsWith('#')) return;
  const continued = line.endsWith('\\');
  pending.text += (continued ? line.slice(0, -1) : line) + ' ';
  if (!continued) {
    const [keyword, ...rest] = pending.text.trim().split(/\s+/);
    instructions.push({ line: pending.line, keyword: keyword.toUpperCase(), args: rest.join(' ') });
    pending = null;
  }
});

// Stages: global ARG defaults, then FROM <image> [AS <name>] with the instructions of each.
const globalArgs = {};
const stages = [];
for (const instruction of instructions) {
  if (instruction.keyword === 'FROM') {
    const match = /^(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?$/i.exec(instruction.args);
    stages.push({ image: match[1], name: match[2], line: instruction.line, body: [] });
  } else if (stages.length === 0 && instruction.keyword === 'ARG') {
    const [name, value] = instruction.args.split('=');
    globalArgs[name] = value === undefined ? '' : value.replace(/^"|"$/g, '');
  } else if (stages.length > 0) {
    stages[stages.length - 1].body.push(instruction);
  }
}
const stageNames = new Set(stages.map((s) => s.name).filter(Boolean));
const resolve = (image, args) => image.replace(/\$\{(\w+)\}|\$(\w+)/g, (_, a, b) => args[a || b]);
const variants = [...stageNames]
  .filter((n) => n.startsWith('toolchain-'))
  .map((n) => n.slice('toolchain-'.length))
  .filter((v) => stageNames.has(`runtime-${v}`));

// The stages variant `variant` builds, final one last: follows FROM references.
function chain(variant) {
  const args = { ...globalArgs, VARIANT: variant };
  const result = [];
  let stage = stages[stages.length - 1];
  while (stage) {
    result.unshift(stage);
    const image = resolve(stage.image, args);
    stage = stageNames.has(image) ? stages.find((s) => s.name === image) : undefined;
  }
  return { args, stages: result };
}

if (option && option.startsWith('--command=')) {
  const { stages: built } = chain(option.slice('--command='.length));
  const last = (keyword) =>
    built
      .flatMap((s) => s.body)
      .filter((i) => i.keyword === keyword)
      .pop();
  const words = [last('ENTRYPOINT'), last('CMD')]
    .filter(Boolean)
    .flatMap((i) => JSON.parse(i.args));
  console.log(words.join('\n'));
  process.exit(0);
}

// dockerfile-utils.
for (const diagnostic of dockerfileUtils.validate(content)) {
  problems.push(
    `line ${diagnostic.range.start.line + 1}: ${diagnostic.message} (dockerfile-utils)`,
  );
}
// dockerfilelint.
for (const item of dockerfilelint.run(__dirname, content)) {
  problems.push(`line ${item.line}: ${item.title}: ${item.description} (dockerfilelint)`);
}

// Variants and base images.
for (const required of ['cpu', 'cuda']) {
  if (!variants.includes(required))
    problems.push(
      `variant ${required}: stages toolchain-${required} and runtime-${required} are missing`,
    );
}
if (!variants.includes(globalArgs.VARIANT))
  problems.push(`ARG VARIANT defaults to ${globalArgs.VARIANT}, not a variant`);
for (const variant of variants) {
  const { args, stages: built } = chain(variant);
  for (const stage of stages) {
    const image = resolve(stage.image, args);
    if (image.includes('undefined'))
      problems.push(`line ${stage.line}: ${stage.image} uses an undeclared ARG`);
    if (stageNames.has(image)) continue;
    if (/\$\{?VARIANT\b/.test(stage.image)) {
      problems.push(
        `line ${stage.line}: FROM ${stage.image} names no stage for variant ${variant}`,
      );
      continue;
    }
    const tag = /^[^@]+:([^/:@]+)$/.exec(image);
    if (!image.includes('@sha256:') && (!tag || tag[1] === 'latest')) {
      problems.push(
        `line ${stage.line}: base image ${image} needs a pinned tag (variant ${variant})`,
      );
    }
  }
  const final = built[built.length - 1];
  const user = final.body.filter((i) => i.keyword === 'USER').pop();
  if (!user || !/^[1-9]\d*(?::\d+)?$/.test(user.args))
    problems.push(`variant ${variant}: the final stage needs a numeric non-root USER`);
  const entrypoint = built
    .flatMap((s) => s.body)
    .filter((i) => i.keyword === 'ENTRYPOINT')
    .pop();
  if (!entrypoint || !entrypoint.args.startsWith('['))
    problems.push(
      `variant ${variant}: needs an exec-form ENTRYPOINT (the server must be PID 1 to get SIGTERM)`,
    );
  const exposed = built
    .flatMap((s) => s.body)
    .filter((i) => i.keyword === 'EXPOSE')
    .flatMap((i) => i.args.split(/\s+/));
  const flags = lib.parseFlagFiles([
    fs.readFileSync(path.join(repo, 'deploy/k8s/base/server.flags'), 'utf8'),
  ]);
  for (const flag of ['listen', 'metrics_listen']) {
    const port = flags[flag].split(':').pop();
    if (!exposed.includes(port))
      problems.push(
        `variant ${variant}: EXPOSE lacks ${port} (--${flag} of deploy/k8s/base/server.flags)`,
      );
  }
}

// The build context: .dockerignore patterns (no `!` exceptions used) matched like Docker does,
// `*` within a path element, `**` across elements, a match also excluding everything below.
const ignorePatterns = fs
  .readFileSync(path.join(repo, '.dockerignore'), 'utf8')
  .split('\n')
  .map((l) => l.trim())
  .filter((l) => l !== '' && !l.startsWith('#'));
if (ignorePatterns.some((p) => p.startsWith('!')))
  problems.push('.dockerignore: `!` exceptions are not supported by this check');
const patternRegexes = ignorePatterns.map(
  (p) =>
    new RegExp(
      '^' +
        p
          .replace(/\/+$/, '')
          .replace(/[.+^${}()|[\]\\]/g, '\\$&')
          .replace(/\*\*\//g, '\0')
          .replace(/\*\*/g, '.*')
          .replace(/\*/g, '[^/]*')
          .replace(/\?/g, '[^/]')
          .replace(/\0/g, '(.*/)?') +
        '(/.*)?$',
    ),
);
const ignored = (p) => patternRegexes.some((r) => r.test(p));
for (const p of ['build', 'build-debug/x', '.git', 'tests/deploy/node_modules/x']) {
  if (!ignored(p)) problems.push(`.dockerignore: ${p} would be sent to the Docker daemon`);
}
const needed = new Set(['CMakeLists.txt', 'cmake']);
for (const instruction of instructions.filter((i) => ['COPY', 'ADD', 'RUN'].includes(i.keyword))) {
  for (const match of instruction.args.matchAll(/\b(deploy\/[\w./-]*\w)/g)) needed.add(match[1]);
}
for (const match of fs
  .readFileSync(path.join(repo, 'CMakeLists.txt'), 'utf8')
  .matchAll(/add_subdirectory\((\w+)\)/g)) {
  if (match[1] !== 'tests' && match[1] !== 'bench') needed.add(match[1]);
}
for (const p of needed) {
  if (!fs.existsSync(path.join(repo, p)))
    problems.push(`the Dockerfile needs ${p}, which does not exist`);
  else if (ignored(p)) problems.push(`.dockerignore excludes ${p}, which the build needs`);
}

if (problems.length > 0) {
  console.error(
    `check-dockerfile: ${problems.length} problem(s) in ${dockerfile}:\n  ${problems.join('\n  ')}`,
  );
  process.exit(1);
}
console.log(
  `check-dockerfile: ${instructions.length} instructions, ${stages.length} stages, variants ${variants.join(', ')}: ` +
    'dockerfile-utils and dockerfilelint clean, base images pinned, non-root, ports exposed, context complete',
);
