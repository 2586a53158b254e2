// {{name}}: a wasmtrigger action in JavaScript. Do the work for an event and
// return the run's output (handed to chained triggers); throw a string to fail
// the run (an Error object would abort the module: throw its message).
import { log } from 'wasmtrigger:plugin/log@0.1.0';
import { increment } from 'wasmtrigger:plugin/kv@0.1.0';

export function run(event, params) {
  try {
    // `params` is the trigger's `params` as JSON text.
    const p = JSON.parse(params);
    // Per-trigger state that survives restarts; increment is atomic (a BigInt).
    const runs = Number(increment('runs', 1n));
    log('info', `run ${runs} for ${event.kind} event ${event.id}`);
    return JSON.stringify({ runs, kind: event.kind, params: p });
  } catch (e) {
    throw e instanceof Error ? e.message : String(e);
  }
}
