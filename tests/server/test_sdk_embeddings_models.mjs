// Embeddings, /v1/models and /health through the official openai SDK.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { modelDim, startServer } from './lib/server.mjs';

let server;
let client;
let dim;

before(async () => {
  dim = modelDim();
  server = await startServer(['--parallel', '2', '-t', '1']);
  client = server.client();
});

after(async () => {
  const { code } = await server.stop();
  assert.equal(code, 0, `skiff serve exit code:\n${server.log}`);
});

const norm = (v) => Math.sqrt(v.reduce((s, x) => s + x * x, 0));

test('embeddings (encoding_format float): model dim, unit norm, same input same vector', async () => {
  const input = 'The little dog ran in the park.';
  const a = await client.embeddings.create({ model: 'skiff-default', input, encoding_format: 'float' });
  assert.equal(a.object, 'list');
  assert.equal(a.data.length, 1);
  assert.equal(a.data[0].object, 'embedding');
  assert.equal(a.data[0].index, 0);
  const v = a.data[0].embedding;
  assert.equal(v.length, dim);
  assert.ok(v.every(Number.isFinite));
  assert.ok(Math.abs(norm(v) - 1) < 1e-4, `norm ${norm(v)}`);
  assert.ok(a.usage.prompt_tokens > 0);
  assert.equal(a.usage.total_tokens, a.usage.prompt_tokens);

  const b = await client.embeddings.create({ model: 'skiff-default', input, encoding_format: 'float' });
  assert.deepEqual(b.data[0].embedding, v, 'same input, same vector');

  // Several inputs (more than the 2 slots): in order, the first equal to the single one.
  const inputs = [input, 'A cat sat on the mat.', 'Tom liked to eat apples.'];
  const many = await client.embeddings.create({ model: 'skiff-default', input: inputs, encoding_format: 'float' });
  assert.deepEqual(many.data.map((d) => d.index), [0, 1, 2]);
  assert.deepEqual(many.data[0].embedding, v);
  assert.notDeepEqual(many.data[1].embedding, v);
  for (const d of many.data) assert.ok(Math.abs(norm(d.embedding) - 1) < 1e-4);
});

// The SDK asks for base64 unless told otherwise (openai-node: "defaulting to base64 for
// performance reasons"), so this is what `client.embeddings.create({input})` sends.
test('embeddings with the SDK default encoding (base64)', async () => {
  const input = 'The little dog ran in the park.';
  const f = await client.embeddings.create({ model: 'skiff-default', input, encoding_format: 'float' });
  const d = await client.embeddings.create({ model: 'skiff-default', input });
  assert.equal(d.data[0].embedding.length, dim);
  for (let i = 0; i < dim; ++i) assert.ok(Math.abs(d.data[0].embedding[i] - f.data[0].embedding[i]) < 1e-6);
});

test('/v1/models lists the served model', async () => {
  const page = await client.models.list();
  const models = page.data;
  assert.equal(models.length, 1);
  assert.equal(models[0].id, 'skiff-default');
  assert.equal(models[0].object, 'model');
  assert.equal(models[0].owned_by, 'skiff');
  assert.equal(typeof models[0].created, 'number');
  const ids = [];
  for await (const m of client.models.list()) ids.push(m.id);
  assert.deepEqual(ids, ['skiff-default']);
});

test('/health is 200 {"status":"ok"}', async () => {
  const r = await fetch(`${server.url}/health`);
  assert.equal(r.status, 200);
  assert.deepEqual(await r.json(), { status: 'ok' });
});
