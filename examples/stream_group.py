#!/usr/bin/env python3
"""Read vigil events from the Redis Stream in a consumer group, at least once, with XACK.

    python3 examples/stream_group.py [--url redis://127.0.0.1:6379] [--stream stream:events]
        [--group workers] [--consumer NAME] [--count N]

Run several with different --consumer names to share the work. Each entry is acknowledged after
it is handled, so a consumer that dies leaves its entries pending; the others take them over
(XAUTOCLAIM) once they have been idle for --claim-after ms. Needs `[redis] stream` set in
vigil's config, and the `redis` package (Debian: python3-redis; pip: redis).
"""
import argparse
import json
import socket

import redis


def handle(event):
    """Do the work for one event; here, print it."""
    print(json.dumps(event), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="redis://127.0.0.1:6379")
    parser.add_argument("--stream", default="stream:events")
    parser.add_argument("--group", default="workers")
    parser.add_argument("--consumer", default=socket.gethostname())
    parser.add_argument("--claim-after", type=int, default=60_000, help="ms before a dead consumer's entries are taken")
    parser.add_argument("--count", type=int, default=0, help="exit after this many events")
    args = parser.parse_args()

    r = redis.Redis.from_url(args.url, decode_responses=True)
    try:
        # From the start of the stream: a new group sees everything the stream still holds.
        r.xgroup_create(args.stream, args.group, id="0", mkstream=True)
    except redis.ResponseError as e:
        if "BUSYGROUP" not in str(e):
            raise
    handled = 0
    # First what this consumer read before a restart and never acknowledged, then new entries.
    cursor = "0"
    while not args.count or handled < args.count:
        # Take no more than will be handled: whatever is read stays pending until acknowledged.
        batch = min(10, args.count - handled) if args.count else 10
        _, claimed, *_ = r.xautoclaim(args.stream, args.group, args.consumer, args.claim_after, "0-0", count=batch)
        room = batch - len(claimed)
        reply = r.xreadgroup(args.group, args.consumer, {args.stream: cursor}, count=room, block=1000) if room else []
        # A claimed entry is also in this consumer's pending list: handle each id once.
        entries = dict(claimed + [e for _, got in reply for e in got])
        if cursor == "0" and room and not any(got for _, got in reply):
            cursor = ">"
        for entry_id, fields in entries.items():
            if not fields:
                continue
            handle(json.loads(fields["data"]))
            r.xack(args.stream, args.group, entry_id)
            handled += 1
            if args.count and handled >= args.count:
                break


if __name__ == "__main__":
    main()
