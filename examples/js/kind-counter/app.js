// A wasmtrigger action in JavaScript: counts events per kind in kv, logs,
// and (if params name a `url`) POSTs the count there through the host's
// http capability. Returns {"kind", "count"[, "status"]} as JSON.
//
// Params: {"url": "...", "fail": "message"} (both optional; `fail` throws).
//
// Build: componentize-js --wit ../../../wit --world-name action --disable http fetch-event \
//          -o kind-counter-js.wasm app.js
import { log } from 'wasmtrigger:plugin/log@0.1.0';
import { increment } from 'wasmtrigger:plugin/kv@0.1.0';
import { send } from 'wasmtrigger:plugin/http@0.1.0';

export function run(event, params) {
  try {
    return countEvent(event, JSON.parse(params || '{}'));
  } catch (e) {
    // The error of `run` is a string: throwing an Error object would abort
    // the guest, so pass on its message.
    throw e instanceof Error ? e.message : String(e);
  }
}

function countEvent(event, p) {
  if (p.fail !== undefined) {
    throw new Error(p.fail);
  }
  const count = Number(increment(`kind/${event.kind}`, 1n));
  log('info', `${event.trigger}: ${event.kind} number ${count}`);
  const result = { kind: event.kind, count };
  if (p.url) {
    const response = send({
      method: 'POST',
      url: p.url,
      headers: [{ name: 'content-type', value: 'application/json' }],
      body: new TextEncoder().encode(JSON.stringify(result)),
    });
    result.status = response.status;
  }
  return JSON.stringify(result);
}
