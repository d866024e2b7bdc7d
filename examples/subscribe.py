#!/usr/bin/env python3
"""Print vigil events from Redis Pub/Sub as JSON lines, optionally only some types and cameras.

    python3 examples/subscribe.py [--url redis://127.0.0.1:6379] [--type anpr] [--camera gate-1] [--count N]

Pub/Sub is fire-and-forget: events published while this runs are seen, others are not. For
at-least-once delivery read the stream with a consumer group (stream_group.py), and after a gap
rebuild state with `vigil replay --after-id LAST_ID`. Events carry a database `id` and a `revision`: dedupe on the pair.
Needs the `redis` package (Debian: python3-redis; pip: redis).
"""
import argparse
import json

import redis


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="redis://127.0.0.1:6379")
    parser.add_argument("--type", action="append", help="event type to keep (repeatable)")
    parser.add_argument("--camera", action="append", help="camera id to keep (repeatable)")
    parser.add_argument("--count", type=int, default=0, help="exit after this many events")
    args = parser.parse_args()

    # The seed contract: subscribe to `events`, each message's data is one event as JSON.
    r = redis.Redis.from_url(args.url)
    p = r.pubsub()
    p.subscribe('events')
    printed = 0
    for message in p.listen():
        if message['type'] != 'message':
            continue
        event = json.loads(message['data'])
        if args.type and event['event_type'] not in args.type:
            continue
        if args.camera and event['camera_id'] not in args.camera:
            continue
        print(json.dumps(event), flush=True)
        printed += 1
        if args.count and printed >= args.count:
            break


if __name__ == "__main__":
    main()
