"""A wasmtrigger filter in Python: passes a Deployment whose ready replicas
equal its desired replicas (absent spec.replicas means 1, absent
status.readyReplicas means 0), and counts the events it has seen in kv.

Build: componentize-py -d ../../../wit -w filter componentize app -o ready-replicas-py.wasm
"""

import gc
import json

import wit_world
from componentize_py_types import Err
from wit_world.imports import kv, log


class WitWorld(wit_world.WitWorld):
    def filter(self, event) -> bool:
        data = json.loads(event.data)
        deployment = data.get("object", data)
        kind = deployment.get("kind", "Deployment")
        if kind != "Deployment":
            raise Err(f"expected a Deployment, got a {kind}")
        desired = deployment.get("spec", {}).get("replicas", 1)
        ready = deployment.get("status", {}).get("readyReplicas", 0)
        seen = kv.increment("seen", 1)
        name = deployment.get("metadata", {}).get("name", "?")
        log.log(log.Level.DEBUG, f"deployment {name}: {ready}/{desired} ready (event {seen})")
        return ready == desired


# Built once, at build time (componentize-py snapshots the heap after this
# module has run): everything alive now goes to a permanent generation that
# the cycle collector never walks, so a collection during an event touches
# only that event's objects, not the whole pre-initialised heap.
gc.freeze()
