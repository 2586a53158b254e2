"""{{name}}: a wasmtrigger action in Python. Do the work for an event and
return the run's output (handed to chained triggers); an exception fails the run.
"""

import gc
import json

import wit_world
from wit_world.imports import kv, log


class WitWorld(wit_world.WitWorld):
    def run(self, event, params: str) -> str:
        # `params` is the trigger's `params` as JSON text.
        p = json.loads(params)
        # Per-trigger state that survives restarts; increment is atomic.
        runs = kv.increment("runs", 1)
        log.log(log.Level.INFO, f"run {runs} for {event.kind} event {event.id}")
        return json.dumps({"runs": runs, "kind": event.kind, "params": p})


# Built once, at build time (componentize-py snapshots the heap after this
# module has run): everything alive now goes to a permanent generation that
# the cycle collector never walks, so a collection during an event touches
# only that event's objects, not the whole pre-initialised heap.
gc.freeze()
