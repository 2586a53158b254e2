"""The tests' NATS counterpart, on nats-py (the official Python client from
PyPI, which nobody in this project wrote). Usage:

    nats_client.py URL stream NAME SUBJECT...      create (or update) a file-backed stream
    nats_client.py URL publish SUBJECT COUNT [START] [SIZE]
                                                   JetStream-publish COUNT messages {"n": i}
                                                   (i from START; SIZE pads the message to SIZE bytes)
    nats_client.py URL raw SUBJECT                 publish stdin's bytes as one message
    nats_client.py URL read STREAM SUBJECT         print the stream's messages on SUBJECT,
                                                   one JSON line each: subject, headers, data
    nats_client.py URL consumer STREAM NAME        print the consumer's counts as JSON
"""

import asyncio
import json
import sys

import nats
from nats.js.api import StorageType, StreamConfig


async def main(url, command, args):
    nc = await nats.connect(url)
    js = nc.jetstream()
    try:
        if command == "stream":
            name, subjects = args[0], args[1:]
            config = StreamConfig(name=name, subjects=subjects, storage=StorageType.FILE)
            try:
                await js.add_stream(config)
            except Exception:
                await js.update_stream(config)
        elif command == "publish":
            subject, count = args[0], int(args[1])
            start = int(args[2]) if len(args) > 2 else 0
            size = int(args[3]) if len(args) > 3 else 0
            pending = []
            for i in range(start, start + count):
                body = json.dumps({"n": i})
                if size:
                    body = json.dumps({"n": i, "pad": "x" * max(0, size - len(body) - 10)})
                pending.append(js.publish(subject, body.encode()))
                if len(pending) >= 500:
                    await asyncio.gather(*pending)
                    pending = []
            await asyncio.gather(*pending)
        elif command == "raw":
            await js.publish(args[0], sys.stdin.buffer.read())
        elif command == "read":
            stream, subject = args
            info = await js.stream_info(stream)
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                try:
                    msg = await js.get_msg(stream, seq)
                except Exception:
                    continue
                if msg.subject != subject:
                    continue
                print(json.dumps({
                    "subject": msg.subject,
                    "headers": dict(msg.headers or {}),
                    "data": (msg.data or b"").decode("utf-8", "replace"),
                }))
        elif command == "consumer":
            stream, name = args
            info = await js.consumer_info(stream, name)
            print(json.dumps({
                "num_pending": info.num_pending,
                "num_ack_pending": info.num_ack_pending,
                "num_redelivered": info.num_redelivered,
                "max_ack_pending": info.config.max_ack_pending,
            }))
        else:
            raise SystemExit(f"unknown command {command}")
    finally:
        await nc.drain()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3:]))
