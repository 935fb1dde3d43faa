// Chat and completions through the official openai SDK against `skiff serve` (built-in model):
// streamed and not, usage, stop strings, seeds, n, logprobs, the max_tokens ceiling and
// multi-turn prefix reuse.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import OpenAI from 'openai';

import { collect, generateGreedy, startServer } from './lib/server.mjs';

const CEILING = 64;
const PROMPT = 'Once upon a time';
const MESSAGES = [{ role: 'user', content: 'Tell me a story about a cat.' }];
let server;
let client;

before(async () => {
  server = await startServer(['--parallel', '3', '--max-tokens', String(CEILING), '-t', '1']);
  client = server.client();
});

after(async () => {
  const { code } = await server.stop();
  assert.equal(code, 0, `skiff serve exit code:\n${server.log}`);
});

const greedy = { model: 'skiff-default', temperature: 0 };

test('completion at temperature 0 equals skiff generate', async () => {
  const r = await client.completions.create({ ...greedy, prompt: PROMPT, max_tokens: 20 });
  assert.equal(r.object, 'text_completion');
  assert.match(r.id, /^cmpl-/);
  assert.equal(r.choices.length, 1);
  assert.equal(r.choices[0].index, 0);
  assert.equal(r.choices[0].finish_reason, 'length');
  assert.equal(r.choices[0].text, generateGreedy(PROMPT, 20));
  assert.equal(r.usage.completion_tokens, 20);
  assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + 20);
});

test('streamed completion: same text, one id, finish_reason length', async () => {
  const plain = await client.completions.create({ ...greedy, prompt: PROMPT, max_tokens: 24 });
  const s = await collect(await client.completions.create({ ...greedy, prompt: PROMPT, max_tokens: 24, stream: true }));
  assert.equal(s.text[0], plain.choices[0].text);
  assert.equal(s.ids.size, 1);
  assert.match([...s.ids][0], /^cmpl-/);
  assert.deepEqual([...s.objects], ['text_completion']);
  assert.equal(s.finish[0], 'length');
  assert.ok(s.chunks >= 3, `${s.chunks} chunks`);
  assert.equal(s.usage, null, 'no usage chunk unless stream_options.include_usage');
});

test('chat: streamed text equals non-streamed text at temperature 0', async () => {
  const plain = await client.chat.completions.create({ ...greedy, messages: MESSAGES, max_tokens: 30 });
  assert.equal(plain.object, 'chat.completion');
  assert.match(plain.id, /^chatcmpl-/);
  assert.equal(plain.choices[0].message.role, 'assistant');
  const text = plain.choices[0].message.content;
  assert.ok(text.length > 0);
  assert.ok(['length', 'stop'].includes(plain.choices[0].finish_reason));

  const stream = await client.chat.completions.create({ ...greedy, messages: MESSAGES, max_tokens: 30, stream: true });
  let role = null;
  const chunks = [];
  for await (const chunk of stream) {
    chunks.push(chunk);
    if (chunk.choices[0]?.delta?.role) role = chunk.choices[0].delta.role;
  }
  const ids = new Set(chunks.map((c) => c.id));
  assert.equal(ids.size, 1, 'one id per stream');
  assert.match([...ids][0], /^chatcmpl-/);
  assert.ok(chunks.every((c) => c.object === 'chat.completion.chunk'));
  assert.equal(role, 'assistant');
  const streamed = chunks.map((c) => c.choices[0]?.delta?.content ?? '').join('');
  assert.equal(streamed, text);
  assert.equal(chunks.at(-1).choices[0].finish_reason, plain.choices[0].finish_reason);
});

for (const endpoint of ['chat', 'completions']) {
  test(`${endpoint}: stream_options.include_usage gives a final usage chunk`, async () => {
    const body = endpoint === 'chat' ? { messages: MESSAGES } : { prompt: PROMPT };
    const api = endpoint === 'chat' ? client.chat.completions : client.completions;
    const plain = await api.create({ ...greedy, ...body, max_tokens: 12 });
    const s = await collect(await api.create({
      ...greedy, ...body, max_tokens: 12, stream: true, stream_options: { include_usage: true },
    }));
    assert.ok(s.usage, 'a usage chunk');
    assert.equal(s.usage.completion_tokens, 12);
    assert.equal(s.usage.prompt_tokens, plain.usage.prompt_tokens);
    assert.equal(s.usage.total_tokens, s.usage.prompt_tokens + 12);
    assert.equal(typeof s.usage.prompt_tokens_details?.cached_tokens, 'number');
    assert.ok(s.usage.prompt_tokens_details.cached_tokens >= 0);
    assert.equal(s.usageNullChunks, s.chunks - 1, 'every other chunk has usage: null');
    assert.equal(s.ids.size, 1);
  });
}

test('stop strings: the text ends before the stop string, finish_reason stop', async () => {
  const full = (await client.completions.create({ ...greedy, prompt: PROMPT, max_tokens: 40 })).choices[0].text;
  // A stop string from the middle of the greedy text.
  const words = full.split(' ').filter((w) => w.length >= 3);
  const stop = words[Math.floor(words.length / 2)];
  const at = full.indexOf(stop);
  assert.ok(at > 0, `stop ${JSON.stringify(stop)} in ${JSON.stringify(full)}`);
  const want = full.slice(0, at);

  const r = await client.completions.create({ ...greedy, prompt: PROMPT, max_tokens: 40, stop });
  assert.equal(r.choices[0].text, want);
  assert.equal(r.choices[0].finish_reason, 'stop');

  const s = await collect(await client.completions.create({
    ...greedy, prompt: PROMPT, max_tokens: 40, stop: ['zzzz-not-there', stop], stream: true,
  }));
  assert.equal(s.text[0], want);
  assert.equal(s.finish[0], 'stop');

  const chatFull = (await client.chat.completions.create({ ...greedy, messages: MESSAGES, max_tokens: 40 }))
    .choices[0].message.content;
  const chatStop = chatFull.split(' ').filter((w) => w.length >= 3)[1];
  const c = await client.chat.completions.create({ ...greedy, messages: MESSAGES, max_tokens: 40, stop: [chatStop] });
  assert.equal(c.choices[0].message.content, chatFull.slice(0, chatFull.indexOf(chatStop)));
  assert.equal(c.choices[0].finish_reason, 'stop');
});

test('seed: the same seed twice gives the same text at temperature 1', async () => {
  const ask = (seed) => client.completions.create({ prompt: PROMPT, max_tokens: 30, temperature: 1, seed });
  const [a, b] = [await ask(1234), await ask(1234)];
  assert.equal(a.choices[0].text, b.choices[0].text);
  const chat = (seed) => client.chat.completions.create({ messages: MESSAGES, max_tokens: 30, temperature: 1, seed });
  assert.equal((await chat(99)).choices[0].message.content, (await chat(99)).choices[0].message.content);
  // Different seeds: not all the same text (5 draws of 30 tokens at temperature 1).
  const texts = new Set();
  for (const seed of [1, 2, 3, 4, 5]) texts.add((await ask(seed)).choices[0].text);
  assert.ok(texts.size > 1, 'five seeds gave one text');
});

test('n=3 gives 3 choices, index 0..2 (streamed too)', async () => {
  const r = await client.chat.completions.create({ messages: MESSAGES, max_tokens: 16, temperature: 1, seed: 7, n: 3 });
  assert.deepEqual(r.choices.map((c) => c.index), [0, 1, 2]);
  for (const c of r.choices) assert.ok(c.message.content.length > 0 && c.finish_reason);
  const rc = await client.completions.create({ prompt: PROMPT, max_tokens: 16, temperature: 0, n: 3 });
  assert.deepEqual(rc.choices.map((c) => c.index), [0, 1, 2]);
  const solo = await client.completions.create({ ...greedy, prompt: PROMPT, max_tokens: 16 });
  for (const c of rc.choices) assert.equal(c.text, solo.choices[0].text, 'greedy choices are all the greedy text');
  assert.equal(rc.usage.completion_tokens, 48);

  const s = await collect(await client.chat.completions.create({
    messages: MESSAGES, max_tokens: 16, temperature: 1, seed: 7, n: 3, stream: true,
  }));
  assert.equal(s.ids.size, 1);
  assert.deepEqual(Object.keys(s.text).map(Number), [0, 1, 2]);
  assert.deepEqual(s.text, r.choices.map((c) => c.message.content), 'same seed: streamed choices == non-streamed');
  assert.equal(s.finish.filter(Boolean).length, 3);
});

test('chat logprobs + top_logprobs: shapes, values <= 0, greedy token is the top one', async () => {
  const r = await client.chat.completions.create({
    ...greedy, messages: MESSAGES, max_tokens: 10, logprobs: true, top_logprobs: 3,
  });
  const content = r.choices[0].logprobs.content;
  assert.equal(content.length, r.usage.completion_tokens);
  assert.equal(content.map((t) => t.token).join(''), r.choices[0].message.content);
  for (const t of content) {
    assert.equal(typeof t.token, 'string');
    assert.ok(t.logprob <= 0, `logprob ${t.logprob}`);
    assert.deepEqual(t.bytes, [...Buffer.from(t.token, 'utf8')]);
    assert.equal(t.top_logprobs.length, 3);
    for (const alt of t.top_logprobs) assert.ok(alt.logprob <= 0 && typeof alt.token === 'string');
    for (let i = 1; i < 3; ++i) assert.ok(t.top_logprobs[i - 1].logprob >= t.top_logprobs[i].logprob);
    assert.equal(t.top_logprobs[0].token, t.token);
    assert.ok(Math.abs(t.top_logprobs[0].logprob - t.logprob) < 1e-6);
  }
  const off = await client.chat.completions.create({ ...greedy, messages: MESSAGES, max_tokens: 4 });
  assert.equal(off.choices[0].logprobs, null, 'no logprobs unless asked');

  const s = await client.chat.completions.create({
    ...greedy, messages: MESSAGES, max_tokens: 10, logprobs: true, top_logprobs: 2, stream: true,
  });
  const streamed = [];
  for await (const chunk of s) for (const t of chunk.choices[0]?.logprobs?.content ?? []) streamed.push(t);
  assert.deepEqual(streamed.map((t) => t.token), content.map((t) => t.token));
  assert.ok(streamed.every((t) => t.logprob <= 0 && t.top_logprobs.length === 2));
});

test('completions logprobs: tokens, token_logprobs, top_logprobs, text_offset', async () => {
  const r = await client.completions.create({ ...greedy, prompt: PROMPT, max_tokens: 10, logprobs: 2 });
  const lp = r.choices[0].logprobs;
  const n = r.usage.completion_tokens;
  assert.equal(lp.tokens.length, n);
  assert.equal(lp.token_logprobs.length, n);
  assert.equal(lp.top_logprobs.length, n);
  assert.equal(lp.text_offset.length, n);
  assert.equal(lp.tokens.join(''), r.choices[0].text);
  let offset = 0;
  for (let i = 0; i < n; ++i) {
    assert.ok(lp.token_logprobs[i] <= 0);
    const alts = Object.entries(lp.top_logprobs[i]);
    assert.ok(alts.length >= 1 && alts.length <= 2);
    for (const [, v] of alts) assert.ok(v <= 0);
    assert.ok(lp.tokens[i] in lp.top_logprobs[i], 'the greedy token is among the top ones');
    assert.equal(lp.text_offset[i], offset);
    offset += lp.tokens[i].length;
  }
});

test('max_tokens ceiling (--max-tokens 64)', async () => {
  await assert.rejects(
    client.completions.create({ prompt: PROMPT, max_tokens: CEILING + 1 }),
    (e) => e instanceof OpenAI.BadRequestError && e.status === 400 && e.param === 'max_tokens',
  );
  await assert.rejects(
    client.chat.completions.create({ messages: MESSAGES, max_completion_tokens: 10_000 }),
    (e) => e instanceof OpenAI.BadRequestError && e.param === 'max_completion_tokens',
  );
  const ok = await client.completions.create({ ...greedy, prompt: PROMPT, max_tokens: CEILING });
  assert.ok(ok.usage.completion_tokens <= CEILING);
  const dflt = await client.completions.create({ ...greedy, prompt: PROMPT });
  assert.ok(dflt.usage.completion_tokens <= CEILING, `${dflt.usage.completion_tokens} tokens without max_tokens`);
});

test('multi-turn chat reuses the cached prefix', async () => {
  const turn1 = [{ role: 'system', content: 'You tell short stories.' }, { role: 'user', content: 'A story about a dog.' }];
  const r1 = await client.chat.completions.create({ ...greedy, messages: turn1, max_tokens: 20 });
  const reply = r1.choices[0].message.content;
  const turn2 = [...turn1, { role: 'assistant', content: reply }, { role: 'user', content: 'What was its name?' }];
  const r2 = await client.chat.completions.create({ ...greedy, messages: turn2, max_tokens: 20 });
  assert.ok(r2.usage.prompt_tokens > r1.usage.prompt_tokens);
  assert.ok(r2.usage.prompt_tokens_details.cached_tokens > 0,
    `turn 2 usage ${JSON.stringify(r2.usage)} (turn 1: ${JSON.stringify(r1.usage)})`);
  assert.ok(r2.usage.prompt_tokens_details.cached_tokens >= r1.usage.prompt_tokens / 2);

  // Reuse does not change the answer: turn 2 asked again (streamed, after an unrelated request)
  // gives the same greedy text.
  await client.completions.create({ ...greedy, prompt: 'The sun was hot', max_tokens: 8 });
  const s = await collect(await client.chat.completions.create({
    ...greedy, messages: turn2, max_tokens: 20, stream: true, stream_options: { include_usage: true },
  }));
  assert.equal(s.text[0], r2.choices[0].message.content);
  assert.ok(s.usage.prompt_tokens_details.cached_tokens > 0);
});
