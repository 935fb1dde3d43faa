// --api-key: the SDK gets AuthenticationError (401) without the key or with a wrong one, and
// works with it; /health stays public.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import OpenAI from 'openai';

import { startServer } from './lib/server.mjs';

const KEY = 'sk-skiff-test-0123456789';
let server;

before(async () => {
  server = await startServer(['--api-key', KEY, '-t', '1']);
});

after(async () => {
  const { code } = await server.stop();
  assert.equal(code, 0, `skiff serve exit code:\n${server.log}`);
});

const isAuthError = (e) => e instanceof OpenAI.AuthenticationError && e.status === 401 && e.code === 'invalid_api_key'
  && e.type === 'authentication_error';

test('a wrong key: AuthenticationError on every route', async () => {
  for (const key of ['sk-wrong', `${KEY}x`, KEY.slice(0, -1)]) {
    const c = server.client(key);
    await assert.rejects(c.chat.completions.create({ messages: [{ role: 'user', content: 'hi' }], max_tokens: 4 }), isAuthError);
    await assert.rejects(c.completions.create({ prompt: 'hi', max_tokens: 4 }), isAuthError);
    await assert.rejects(c.models.list(), isAuthError);
    await assert.rejects(c.embeddings.create({ input: 'hi', encoding_format: 'float' }), isAuthError);
  }
});

test('no key: 401 with the OpenAI error shape', async () => {
  for (const headers of [{}, { Authorization: KEY }, { Authorization: `Basic ${KEY}` }, { Authorization: 'Bearer ' }]) {
    const r = await fetch(`${server.url}/v1/completions`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', ...headers },
      body: JSON.stringify({ prompt: 'hi', max_tokens: 4 }),
    });
    assert.equal(r.status, 401);
    const body = await r.json();
    assert.deepEqual(Object.keys(body.error).sort(), ['code', 'message', 'param', 'type']);
    assert.equal(body.error.type, 'authentication_error');
  }
  const m = await fetch(`${server.url}/metrics`);
  assert.equal(m.status, 401, '/metrics needs the key too');
});

test('the right key: 200', async () => {
  const c = server.client(KEY);
  const r = await c.chat.completions.create({ messages: [{ role: 'user', content: 'hi' }], max_tokens: 4, temperature: 0 });
  assert.equal(r.choices.length, 1);
  const { data, response } = await c.completions.create({ prompt: 'hi', max_tokens: 4 }).withResponse();
  assert.equal(response.status, 200);
  assert.equal(data.usage.completion_tokens, 4);
  assert.equal((await c.models.list()).data[0].id, 'skiff-default');
});

test('/health is public', async () => {
  const r = await fetch(`${server.url}/health`);
  assert.equal(r.status, 200);
  assert.deepEqual(await r.json(), { status: 'ok' });
});
