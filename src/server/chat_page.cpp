#include "server/chat_page.h"

namespace skiff::server {

const std::string& chat_page_html() {
  static const std::string page = R"HTML(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>skiff chat</title>
<link rel="icon" href="data:,">
<style>
  body { font-family: system-ui, sans-serif; max-width: 48rem; margin: 1rem auto; padding: 0 1rem; color: #222; }
  #log { border: 1px solid #ccc; border-radius: 6px; padding: .5rem; min-height: 16rem; white-space: pre-wrap; }
  .user { color: #0645ad; margin: .4rem 0; }
  .assistant { margin: .4rem 0 .8rem; }
  form { display: flex; gap: .5rem; margin-top: .5rem; }
  #prompt { flex: 1; padding: .4rem; }
  #status { color: #666; font-size: .9rem; margin-top: .3rem; }
  .failed { color: #999; text-decoration: line-through; }
  details { margin-top: .5rem; font-size: .9rem; }
</style>
</head>
<body>
<h1>skiff</h1>
<div id="log" aria-live="polite"></div>
<form id="form">
  <input id="prompt" autocomplete="off" placeholder="Say something" required>
  <button id="send" type="submit">Send</button>
  <button id="stop" type="button" disabled>Stop</button>
</form>
<div id="status">ready</div>
<details><summary>Settings</summary>
  <label>System prompt <input id="system" size="40"></label><br>
  <label>Temperature <input id="temperature" type="number" value="0.7" min="0" max="2" step="0.1"></label>
  <label>Max tokens <input id="max_tokens" type="number" min="1" placeholder="what fits"></label><br>
  <label><input id="truncate" type="checkbox" checked> Keep the end of a conversation longer than the context</label><br>
  <label>API key <input id="key" type="password" size="30"></label>
</details>
<script>
// The conversation so far, as the API takes it. A turn that failed before any reply is taken
// back out, so the next request does not carry an empty assistant message.
const messages = [];
const log = document.getElementById('log');
const statusLine = document.getElementById('status');
const $ = (id) => document.getElementById(id);
let controller = null;

function line(cls, text) {
  const div = document.createElement('div');
  div.className = cls;
  div.textContent = text;
  log.appendChild(div);
  return div;
}

// The request body at the page's settings; an empty number field leaves that field to the
// server (max_tokens: whatever fits the context).
function requestBody() {
  const system = $('system').value;
  const body = {
    messages: (system ? [{role: 'system', content: system}] : []).concat(messages),
    stream: true,
    stream_options: {include_usage: true},
  };
  if ($('temperature').value !== '') body.temperature = Number($('temperature').value);
  if ($('max_tokens').value !== '') body.max_tokens = Number($('max_tokens').value);
  if ($('truncate').checked) body.skiff = {truncate: true};
  return body;
}

async function send(text) {
  messages.push({role: 'user', content: text});
  const asked = line('user', 'You: ' + text);
  const out = line('assistant', '');
  const body = requestBody();
  const headers = {'Content-Type': 'application/json'};
  const key = $('key').value;
  if (key) headers['Authorization'] = 'Bearer ' + key;
  controller = new AbortController();
  $('stop').disabled = false;
  delete statusLine.dataset.tokensPerSecond;  // set again when this turn is done
  statusLine.textContent = 'waiting';
  const start = performance.now();
  let first = 0, tokens = 0, chunks = 0, reply = '', finished = false;
  try {
    const res = await fetch('/v1/chat/completions', {method: 'POST', headers, body: JSON.stringify(body),
                                                      signal: controller.signal});
    if (!res.ok) {
      const err = await res.json().catch(() => ({error: {message: res.statusText}}));
      throw new Error(err.error ? err.error.message : res.statusText);
    }
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buffer = '';
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, {stream: true}).replace(/\r\n/g, '\n');
      let cut;
      while ((cut = buffer.indexOf('\n\n')) >= 0) {
        const event = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        if (!event.startsWith('data: ')) continue;
        const data = event.slice(6);
        if (data === '[DONE]') continue;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new Error(chunk.error.message);
        if (chunk.usage) tokens = chunk.usage.completion_tokens;
        for (const c of chunk.choices || []) {
          if (c.delta && c.delta.content) {
            if (!first) first = performance.now();
            ++chunks;
            reply += c.delta.content;
            out.textContent = reply;
          }
        }
        // While streaming, a text chunk is about a token; usage gives the count at the end.
        const secs = first ? (performance.now() - first) / 1000 : 0;
        statusLine.textContent = 'streaming' + (secs > 0 && chunks > 1 ? ` ${(chunks / secs).toFixed(1)} tokens/s` : '');
      }
    }
    if (!tokens) tokens = chunks;
    const secs = (performance.now() - (first || start)) / 1000;
    statusLine.textContent = `${tokens} tokens, ${secs > 0 ? (tokens / secs).toFixed(1) : '-'} tokens/s, ` +
      `first token after ${((first || performance.now()) - start).toFixed(0)} ms`;
    statusLine.dataset.tokensPerSecond = secs > 0 ? (tokens / secs).toFixed(2) : '0';
    finished = true;
  } catch (e) {
    statusLine.textContent = e.name === 'AbortError' ? 'stopped' : 'error: ' + e.message;
  }
  if (finished || reply) {
    messages.push({role: 'assistant', content: reply});
  } else {
    messages.pop();  // failed or stopped before any reply: not part of the conversation
    asked.classList.add('failed');
    out.remove();
  }
  controller = null;
  $('stop').disabled = true;
}

$('form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const input = $('prompt');
  const text = input.value.trim();
  if (!text || controller) return;
  input.value = '';
  send(text);
});
$('stop').addEventListener('click', () => controller && controller.abort());
</script>
</body>
</html>
)HTML";
  return page;
}

}  // namespace skiff::server
