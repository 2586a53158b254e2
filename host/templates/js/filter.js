// {{name}}: a wasmtrigger filter in JavaScript. Return true to run the
// trigger's action for this event, false to drop it; throw a string to fail
// the run (an Error object would abort the module: throw its message).
import { log } from 'wasmtrigger:plugin/log@0.1.0';

export function filter(event) {
  // `data` is JSON text.
  const data = JSON.parse(event.data);
  // A webhook's data is {body, headers, contentType}; a kube-watch's is the object change.
  const object = event.source === 'webhook' ? data?.body : data?.object;
  const name = object?.metadata?.name ?? '?';
  log('info', `${event.kind} event for ${name}`);
  // Replace with your own rule: here, pass objects that have a name.
  return name !== '?';
}
