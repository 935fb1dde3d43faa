// Starts `skiff serve` on a free loopback port for one test file, and stops it: SIGTERM (then
// SIGKILL) from after(), SIGKILL when this process exits any other way, and the kernel's
// parent-death signal (setpriv --pdeathsig) should node itself be killed.
//
// SKIFF_BIN: the skiff binary (run_node.py sets it from CTest's --skiff).
import { spawn, execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import assert from 'node:assert/strict';

import OpenAI from 'openai';

export const SKIFF = process.env.SKIFF_BIN;
if (!SKIFF) throw new Error('SKIFF_BIN is not set (run through tests/server/run_node.py)');

const live = new Set();
process.on('exit', () => {
  for (const p of live) p.kill('SIGKILL');
});

// A started server: its port, its stderr so far (`log`, for failure messages), its exit.
export class Server {
  constructor(proc) {
    this.proc = proc;
    this.log = '';
    this.exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
    this.exited.then(() => live.delete(proc));
  }

  get url() { return `http://127.0.0.1:${this.port}`; }

  // An SDK client; no retries (a 429 or a 5xx must surface as it is).
  client(apiKey = 'sk-unused', options = {}) {
    return new OpenAI({ baseURL: `${this.url}/v1`, apiKey, maxRetries: 0, timeout: 120_000, ...options });
  }

  // SIGTERM, then SIGKILL after `graceMs`: the exit code and signal.
  async stop(graceMs = 15_000) {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return this.exited;
    this.proc.kill('SIGTERM');
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), graceMs);
    const r = await this.exited;
    clearTimeout(timer);
    return r;
  }
}

// `skiff serve --port 0 ...args`; resolves once it says "ready".
export async function startServer(args = [], { readyMs = 120_000 } = {}) {
  const argv = ['serve', '--port', '0', ...args];
  const withPdeath = existsSync('/usr/bin/setpriv');
  const proc = withPdeath
    ? spawn('/usr/bin/setpriv', ['--pdeathsig', 'KILL', '--', SKIFF, ...argv], { stdio: ['ignore', 'ignore', 'pipe'] })
    : spawn(SKIFF, argv, { stdio: ['ignore', 'ignore', 'pipe'] });
  live.add(proc);
  const server = new Server(proc);
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`skiff serve not ready in ${readyMs} ms:\n${server.log}`)), readyMs);
    proc.stderr.setEncoding('utf8');
    proc.stderr.on('data', (chunk) => {
      server.log += chunk;
      const m = server.log.match(/listening on http:\/\/127\.0\.0\.1:(\d+)/);
      if (m) server.port = Number(m[1]);
      if (server.port && /skiff serve: ready:/.test(server.log)) {
        clearTimeout(timer);
        resolve();
      }
    });
    server.exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`skiff serve exited (${code ?? signal}) before it was ready:\n${server.log}`));
    });
  });
  return server;
}

// The built-in model's embedding width, from `skiff info` ("dim 192, layers 8, ...").
export function modelDim() {
  const out = execFileSync(SKIFF, ['info'], { encoding: 'utf8' });
  const m = out.match(/dim (\d+), layers (\d+)/);
  if (!m) throw new Error(`no 'dim N, layers M' in skiff info:\n${out}`);
  return Number(m[1]);
}

// `skiff generate` greedy text (less the newline it ends with): what the server must produce
// at temperature 0.
export function generateGreedy(prompt, n) {
  const out = execFileSync(SKIFF, ['generate', '-p', prompt, '-n', String(n), '--temp', '0'], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  assert.ok(out.endsWith('\n'), `skiff generate output ${JSON.stringify(out)}`);
  return out.slice(0, -1);
}

// Collects a chat or completions stream: the text per choice, ids, finish reasons, the usage
// chunk and the number of chunks.
export async function collect(stream) {
  const out = { text: [], ids: new Set(), finish: [], usage: null, chunks: 0, usageNullChunks: 0, objects: new Set() };
  for await (const chunk of stream) {
    out.chunks += 1;
    out.ids.add(chunk.id);
    out.objects.add(chunk.object);
    if (chunk.usage) out.usage = chunk.usage;
    else if ('usage' in chunk) out.usageNullChunks += 1;
    for (const c of chunk.choices) {
      const piece = c.delta ? (c.delta.content ?? '') : (c.text ?? '');
      out.text[c.index] = (out.text[c.index] ?? '') + piece;
      if (c.finish_reason) out.finish[c.index] = c.finish_reason;
    }
  }
  return out;
}
