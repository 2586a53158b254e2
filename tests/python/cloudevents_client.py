"""CloudEvents through the official CloudEvents Python SDK (`cloudevents`
from PyPI): a client nobody in this project wrote, on both sides of the
engine's CloudEvents support.

Usage:
  cloudevents_client.py send URL (binary|structured|batch)
      sends CloudEvents made with the SDK to URL in that content mode (batch:
      three events, each serialised by the SDK's JSON format, in one
      application/cloudevents-batch+json array); prints {"status", "body"};
  cloudevents_client.py parse
      reads {"headers": {...}, "body": "..."} on stdin (a request the engine
      sent) and prints the event the SDK reads from it: attributes and data.
"""

import json
import sys
from datetime import datetime, timedelta, timezone
import urllib.error
import urllib.request

from cloudevents.core.bindings import http
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent


def event(n):
    return CloudEvent(
        {
            "id": f"order-{n}",
            "source": "/shop/orders",
            "type": "com.example.order.created",
            "subject": f"order/{n}",
            "time": datetime(2026, 11, 30, 10, 0, tzinfo=timezone(timedelta(hours=1))),
            "datacontenttype": "application/json",
            "tenant": "acme",
        },
        {"order": n, "total": 10 * n},
    )


def post(url, headers, body):
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def send(url, mode):
    fmt = JSONFormat()
    if mode == "binary":
        message = http.to_binary(event(1), fmt)
        status, body = post(url, dict(message.headers), message.body)
    elif mode == "structured":
        message = http.to_structured(event(2), fmt)
        status, body = post(url, dict(message.headers), message.body)
    else:
        batch = "[" + ",".join(fmt.write(event(n)).decode() for n in (3, 4, 5)) + "]"
        headers = {"content-type": "application/cloudevents-batch+json"}
        status, body = post(url, headers, batch.encode())
    return {"status": status, "body": body}


def parse():
    sent = json.load(sys.stdin)
    message = http.HTTPMessage(headers=sent["headers"], body=sent["body"].encode())
    got = http.from_http(message, JSONFormat())
    attributes = {k: (v.isoformat() if hasattr(v, "isoformat") else v)
                  for k, v in got.get_attributes().items()}
    data = got.get_data()
    if isinstance(data, (bytes, bytearray)):
        data = json.loads(data)
    return {"attributes": attributes, "data": data}


def main():
    if sys.argv[1] == "send":
        print(json.dumps(send(sys.argv[2], sys.argv[3])))
    else:
        print(json.dumps(parse()))


if __name__ == "__main__":
    main()
