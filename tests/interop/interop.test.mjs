// An independent client of streamkv.v1: Node.js with @grpc/grpc-js, built from the .proto alone.
// It checks the wire contract the C++ client relies on: DescribeServer, a session over Stream
// with raw and corrupt frames, typed little-endian output tensors, per-layer tokens, and `ended`.
//   STREAMKV_ADDRESS=127.0.0.1:50051 STREAMKV_PROTO=proto/streamkv/v1/streamkv.proto \
//     node --test interop.test.mjs
import assert from 'node:assert/strict';
import test from 'node:test';

import grpc from '@grpc/grpc-js';
import protoLoader from '@grpc/proto-loader';

const definition = protoLoader.loadSync(process.env.STREAMKV_PROTO, {
  keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true,
});
const { StreamKv } = grpc.loadPackageDefinition(definition).streamkv.v1;
const client = new StreamKv(process.env.STREAMKV_ADDRESS, grpc.credentials.createInsecure());

// The tiny model: width 112; a 56x112 frame is 4 patch rows of 8, plus 5 special tokens.
const HEIGHT = 56, WIDTH = 112, TOKENS_PER_FRAME = 5 + 4 * 8, LAYERS = 4;

function rawFrame(sequence) {
  const rgb = Buffer.alloc(HEIGHT * WIDTH * 3);
  for (let i = 0; i < rgb.length; i++) rgb[i] = (i * 7 + sequence * 13) % 256;
  return { sequence, raw: { height: HEIGHT, width: WIDTH, rgb } };
}

// Sends `requests` in order on one Stream call and collects every response until the call ends.
function streamCall(requests) {
  return new Promise((resolve, reject) => {
    const responses = [];
    const call = client.Stream();
    call.on('data', (response) => responses.push(response));
    call.on('error', reject);
    call.on('end', () => resolve(responses));
    for (const request of requests) call.write(request);
    call.end();
  });
}

test('DescribeServer lists the model and the five policies with their schemas', async () => {
  const description = await new Promise((resolve, reject) =>
    client.DescribeServer({}, (error, response) => (error ? reject(error) : resolve(response))));
  assert.equal(description.default_model, 'stream3r-tiny');
  assert.deepEqual(description.policies.map((p) => p.name),
    ['none', 'sliding_window', 'h2o', 'global_ratio', 'layerwise']);
  const window = description.policies.find((p) => p.name === 'sliding_window');
  assert.equal(window.params.find((p) => p.name === 'recent_size').default_value, '512');
});

test('a session answers every frame in order, with typed tensors and per-layer tokens', async () => {
  const responses = await streamCall([
    { open: { policy: 'sliding_window', policy_params: { unit: 'frames', start_size: '1', recent_size: '1' },
              outputs: { names: ['depth'], dtype: 'TENSOR_DTYPE_FLOAT32' } } },
    { frame: rawFrame(1) },
    { frame: { sequence: 2, encoded: Buffer.from('not an image') } },
    { frame: rawFrame(3) },
    { frame: rawFrame(4) },
    { end: {} },
  ]);
  assert.deepEqual(responses.map((r) => r.kind), ['opened', 'result', 'error', 'result', 'result', 'ended']);
  assert.equal(responses[0].opened.session_id.length, 32);
  assert.equal(responses[2].error.sequence, 2);
  assert.equal(responses[2].error.code, grpc.status.INVALID_ARGUMENT);
  const kept = [1, 2, 2];  // sink frame + 1 recent frame
  responses.filter((r) => r.kind === 'result').forEach((r, i) => {
    const result = r.result;
    assert.deepEqual(result.cache.layer_tokens, Array(LAYERS).fill(kept[i] * TOKENS_PER_FRAME));
    const [depth] = result.outputs;
    assert.equal(depth.name, 'depth');
    assert.deepEqual(depth.shape, [HEIGHT, WIDTH, 1]);
    assert.equal(depth.data.length, HEIGHT * WIDTH * 4);
    const values = Array.from({ length: HEIGHT * WIDTH }, (_, k) => depth.data.readFloatLE(4 * k));
    assert.ok(values.every((v) => v > 0 && Number.isFinite(v)), 'depth is exp(.) > 0');
  });
  assert.equal(responses[5].ended.frames_processed, 3);
});

test('a frame before open ends the call with FAILED_PRECONDITION', async () => {
  await assert.rejects(streamCall([{ frame: rawFrame(1) }]),
    (error) => error.code === grpc.status.FAILED_PRECONDITION);
});

test.after(() => client.close());
