"""{{name}}: a wasmtrigger filter in Python. Return True to run the trigger's
action for this event, False to drop it; raise Err("message") to fail the run.
"""

import gc
import json

import wit_world
from componentize_py_types import Err
from wit_world.imports import log


class WitWorld(wit_world.WitWorld):
    def filter(self, event) -> bool:
        # `data` is JSON text: parse it with the json module.
        data = json.loads(event.data)
        if not isinstance(data, dict):
            raise Err("expected a JSON object")
        # A webhook's data is {body, headers, contentType}; a kube-watch's is the object change.
        obj = data.get("body" if event.source == "webhook" else "object") or {}
        name = obj.get("metadata", {}).get("name", "?") if isinstance(obj, dict) else "?"
        log.log(log.Level.INFO, f"{event.kind} event for {name}")
        # Replace with your own rule: here, pass objects that have a name.
        return name != "?"


# Built once, at build time (componentize-py snapshots the heap after this
# module has run): everything alive now goes to a permanent generation that
# the cycle collector never walks, so a collection during an event touches
# only that event's objects, not the whole pre-initialised heap.
gc.freeze()
