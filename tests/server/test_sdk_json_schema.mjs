// response_format json_schema / json_object through the official openai SDK: the reply parses
// as JSON and follows the schema, streamed or not. (Copy into tests/server/ once the server
// supports response_format; until then it answers 400 "not available in this build yet".)
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import OpenAI from 'openai';

import { collect, startServer } from './lib/server.mjs';

let server;
let client;

before(async () => {
  server = await startServer(['--parallel', '2', '-t', '1']);
  client = server.client();
});

after(async () => {
  const { code } = await server.stop();
  assert.equal(code, 0, `skiff serve exit code:\n${server.log}`);
});

const MESSAGES = [{ role: 'user', content: 'Describe a pet as JSON.' }];
// Enum, boolean and integer fields: the tiny model finishes such an object well within
// max_tokens (a free string it may go on writing until the length limit).
const PET = {
  type: 'json_schema',
  json_schema: {
    name: 'pet',
    strict: true,
    schema: {
      type: 'object',
      properties: {
        kind: { type: 'string', enum: ['cat', 'dog', 'bird'] },
        happy: { type: 'boolean' },
        legs: { type: 'integer' },
      },
      required: ['kind', 'happy', 'legs'],
      additionalProperties: false,
    },
  },
};

function checkPet(text) {
  const pet = JSON.parse(text);
  assert.deepEqual(Object.keys(pet).sort(), ['happy', 'kind', 'legs']);
  assert.ok(['cat', 'dog', 'bird'].includes(pet.kind));
  assert.equal(typeof pet.happy, 'boolean');
  assert.ok(Number.isInteger(pet.legs));
}

test('json_schema: the reply follows the schema (temperature 0 and 1)', async () => {
  const r = await client.chat.completions.create({ messages: MESSAGES, max_tokens: 150, temperature: 0, response_format: PET });
  assert.equal(r.choices[0].finish_reason, 'stop');
  checkPet(r.choices[0].message.content);
  for (const seed of [1, 2, 3]) {
    const t = await client.chat.completions.create({ messages: MESSAGES, max_tokens: 150, temperature: 1, seed, response_format: PET });
    assert.equal(t.choices[0].finish_reason, 'stop');
    checkPet(t.choices[0].message.content);
  }
});

test('json_schema streamed == not streamed at temperature 0', async () => {
  const plain = await client.chat.completions.create({ messages: MESSAGES, max_tokens: 150, temperature: 0, response_format: PET });
  const s = await collect(await client.chat.completions.create({
    messages: MESSAGES, max_tokens: 150, temperature: 0, response_format: PET, stream: true,
  }));
  assert.equal(s.text[0], plain.choices[0].message.content);
  checkPet(s.text[0]);
});

// Free-form objects: the tiny model often writes until max_tokens ('length', an unfinished
// object, as with OpenAI); a reply that ends ('stop') must parse as an object.
test('json_object: the reply is (the start of) a JSON object', async () => {
  for (const [temperature, seed] of [[0, 0], [1, 1], [1, 2], [1, 3]]) {
    const r = await client.chat.completions.create({
      messages: MESSAGES, max_tokens: 150, temperature, seed, response_format: { type: 'json_object' },
    });
    const text = r.choices[0].message.content;
    assert.match(text, /^\s*\{/);
    if (r.choices[0].finish_reason === 'stop') {
      const v = JSON.parse(text);
      assert.ok(v !== null && typeof v === 'object' && !Array.isArray(v));
    } else {
      assert.equal(r.choices[0].finish_reason, 'length');
      assert.throws(() => JSON.parse(`${text}`), SyntaxError, 'an unfinished object does not parse');
    }
  }
});

test('completions take response_format too', async () => {
  const r = await client.completions.create({ prompt: 'A pet: ', max_tokens: 150, temperature: 0, response_format: PET });
  checkPet(r.choices[0].text);
});

test('a bad schema is a 400 naming response_format', async () => {
  await assert.rejects(
    client.chat.completions.create({ messages: MESSAGES, response_format: { type: 'json_schema', json_schema: { name: 'x', schema: 'nope' } } }),
    (e) => e instanceof OpenAI.BadRequestError && e.param === 'response_format',
  );
});
