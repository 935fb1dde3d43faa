// 8 concurrent streams (4 slots, so half wait in the queue) all complete with the text each
// prompt gets alone at temperature 0: batching never changes a sequence's greedy output.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { collect, startServer } from './lib/server.mjs';

const PROMPTS = [
  'Once upon a time',
  'Lily and Ben went to the park. They saw',
  'The little dog was sad because',
  'Tom had a red ball.',
  'One day, a cat named Kitty',
  'Mom said, "Time for bed!"',
  'There was a big tree in the garden.',
  'Sara liked to sing.',
];
let server;
let client;

before(async () => {
  server = await startServer(['--parallel', '4', '--max-queue', '8', '-t', '1']);
  client = server.client();
});

after(async () => {
  const { code } = await server.stop();
  assert.equal(code, 0, `skiff serve exit code:\n${server.log}`);
});

const ask = (i, stream) => (i % 2 === 0
  ? client.completions.create({ prompt: PROMPTS[i], max_tokens: 24, temperature: 0, stream })
  : client.chat.completions.create({ messages: [{ role: 'user', content: PROMPTS[i] }], max_tokens: 24, temperature: 0, stream }));
const textOf = (i, r) => (i % 2 === 0 ? r.choices[0].text : r.choices[0].message.content);

test('8 concurrent streams == sequential, temperature 0', async () => {
  const sequential = [];
  for (let i = 0; i < PROMPTS.length; ++i) sequential.push(textOf(i, await ask(i, false)));
  assert.ok(sequential.every((t) => t.length > 0));

  const results = await Promise.all(PROMPTS.map(async (_, i) => collect(await ask(i, true))));
  for (let i = 0; i < PROMPTS.length; ++i) {
    assert.equal(results[i].ids.size, 1, `stream ${i}: one id`);
    assert.ok(results[i].finish[0], `stream ${i}: a finish_reason`);
    assert.equal(results[i].text[0], sequential[i], `stream ${i} (${JSON.stringify(PROMPTS[i])})`);
  }
  const ids = new Set(results.map((r) => [...r.ids][0]));
  assert.equal(ids.size, PROMPTS.length, 'every stream has its own id');
});
