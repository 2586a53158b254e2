"""A wasmtrigger action in Python: counts events per kind in kv, logs, and
(if params name a `url`) POSTs the count there through the host's http
capability. Returns {"kind", "count"[, "status"]} as JSON.

Params: {"url": "...", "fail": "message"} (both optional; `fail` raises, to
show how an exception becomes a failed run).

Build: componentize-py -d ../../../wit -w action componentize app -o kind-counter-py.wasm
"""

import gc
import json

import wit_world
from wit_world.imports import http, kv, log


class WitWorld(wit_world.WitWorld):
    def run(self, event, params: str) -> str:
        p = json.loads(params or "{}")
        if "fail" in p:
            raise ValueError(p["fail"])
        count = kv.increment(f"kind/{event.kind}", 1)
        log.log(log.Level.INFO, f"{event.trigger}: {event.kind} number {count}")
        result = {"kind": event.kind, "count": count}
        if "url" in p:
            response = http.send(
                http.Request(
                    method="POST",
                    url=p["url"],
                    headers=[http.Header(name="content-type", value="application/json")],
                    body=json.dumps(result).encode(),
                )
            )
            result["status"] = response.status
        return json.dumps(result)


# Built once, at build time (componentize-py snapshots the heap after this
# module has run): everything alive now goes to a permanent generation that
# the cycle collector never walks, so a collection during an event touches
# only that event's objects, not the whole pre-initialised heap.
gc.freeze()
