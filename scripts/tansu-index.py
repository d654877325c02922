#!/usr/bin/env python3
"""Adds the one index tansu's SQLite storage is missing.

tansu 0.6 stores record headers in a `header` table with no index. Its fetch
looks up each record's headers with a query on (topition, offset_id), so
every record fetched scans every header row the broker holds: fetching gets
slower as the broker fills, until a consumer catching up keeps the broker's
CPU busy and its group coordinator stops answering heartbeats. Every message
the relay publishes carries seven or more headers. An index on the lookup's
columns makes each record's header lookup a B-tree search. The broker's own schema
and queries are unchanged; only the plan changes.

Usage: tansu-index.py PATH/TO/broker.db [SECONDS]

Waits (up to SECONDS, default 30) for the broker to create its schema, then
creates the index if it does not exist. Safe to run any number of times, and
while the broker runs (the broker's database is in WAL mode).
"""

import sqlite3
import sys
import time


def main() -> int:
    if len(sys.argv) not in (2, 3):
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        print("usage: tansu-index.py PATH/TO/broker.db [SECONDS]", file=sys.stderr)
        return 2
    path = sys.argv[1]
    deadline = time.monotonic() + float(sys.argv[2] if len(sys.argv) == 3 else 30)
    last_error = "the database file does not exist yet"
    while time.monotonic() < deadline:
        try:
            # mode=rw: never create the file; that is the broker's job.
            with sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=10) as db:
                has_table = db.execute(
                    "select 1 from sqlite_master where type = 'table' and name = 'header'"
                ).fetchone()
                if has_table:
                    db.execute(
                        "create index if not exists header_topition_offset"
                        " on header (topition, offset_id)"
                    )
                    return 0
                last_error = "the broker has not created its schema yet"
        except sqlite3.OperationalError as error:
            last_error = str(error)
        time.sleep(0.1)
    print(f"tansu-index.py: {path}: {last_error}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
