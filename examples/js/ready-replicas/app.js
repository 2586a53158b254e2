// A wasmtrigger filter in JavaScript: passes a Deployment whose ready
// replicas equal its desired replicas (absent spec.replicas means 1, absent
// status.readyReplicas means 0), and counts the events it has seen in kv.
//
// Build: componentize-js --wit ../../../wit --world-name filter --disable http fetch-event \
//          -o ready-replicas-js.wasm app.js
import { log } from 'wasmtrigger:plugin/log@0.1.0';
import { increment } from 'wasmtrigger:plugin/kv@0.1.0';

export function filter(event) {
  const data = JSON.parse(event.data);
  const deployment = data.object ?? data;
  const kind = deployment.kind ?? 'Deployment';
  if (kind !== 'Deployment') {
    // A thrown string is the filter's error: the run fails with this message.
    throw `expected a Deployment, got a ${kind}`;
  }
  const desired = deployment.spec?.replicas ?? 1;
  const ready = deployment.status?.readyReplicas ?? 0;
  const seen = increment('seen', 1n);
  log('debug', `deployment ${deployment.metadata?.name}: ${ready}/${desired} ready (event ${seen})`);
  return ready === desired;
}
