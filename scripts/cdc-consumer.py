#!/usr/bin/env python3
"""An example change-stream consumer: follows deeb's GET /api/v1/watch
from any of the given nodes and keeps a copy of the tables it is told to
follow in a local SQLite file, applying each client request whole, in log
order, exactly once, across broken connections and node failures.

    python3 scripts/cdc-consumer.py copy.db 127.0.0.1:4001,127.0.0.1:4002 orders items

It remembers the last request it applied (log index and place in the
entry, table `_position` in the copy, written in the same transaction as
the request's rows), resumes from there after a restart or a broken
stream, and skips what it already applied when a stream repeats it. A table must exist in the copy with the same columns (create
it, or follow from index 1 so the stream's DDL creates it). Standard
library only.
"""

import base64
import json
import sqlite3
import sys
import time
import urllib.error
import urllib.parse
import urllib.request


def sql_value(value):
    """A change's typed value as a Python value for sqlite3."""
    if value is None:
        return None
    (kind, inner), = value.items()
    return base64.b64decode(inner) if kind == "blob" else inner


def quote(name):
    return '"' + name.replace('"', '""') + '"'


def apply(db, change):
    """Applies one row change (or schema change) to the copy."""
    kind, table = change["kind"], change.get("table", "")
    if kind == "DDL":
        # Tables only: the stream's row changes already hold what triggers
        # did, and the copy needs no indexes or views to be right.
        words = change["sql"].split()[:2]
        if [w.upper() for w in words] in (["CREATE", "TABLE"], ["ALTER", "TABLE"], ["DROP", "TABLE"]):
            db.execute(change["sql"])
        return
    if kind == "RESTORE":
        sys.exit(f"index {change['index']}: the database was restored; take a backup and start over")
    key = change.get("key", [])
    where = " AND ".join(f"{quote(c['name'])} IS ?" for c in key)
    key_values = [sql_value(c["value"]) for c in key]
    after = change.get("after", [])
    if kind == "INSERT":
        names = ", ".join(quote(c["name"]) for c in after)
        marks = ", ".join("?" for _ in after)
        db.execute(f"INSERT INTO {quote(table)} ({names}) VALUES ({marks})", [sql_value(c["value"]) for c in after])
    elif kind == "UPDATE":
        changed = [c for c in after if c["name"] not in {k["name"] for k in key}]
        if changed:
            sets = ", ".join(f"{quote(c['name'])} = ?" for c in changed)
            db.execute(f"UPDATE {quote(table)} SET {sets} WHERE {where}",
                       [sql_value(c["value"]) for c in changed] + key_values)
    elif kind == "DELETE":
        db.execute(f"DELETE FROM {quote(table)} WHERE {where}", key_values)


def follow(db, nodes, tables):
    """Follows the stream forever, from the position the copy holds."""
    db.execute("CREATE TABLE IF NOT EXISTS _position (id INTEGER PRIMARY KEY CHECK (id = 0), idx INTEGER, request INTEGER)")
    row = db.execute("SELECT idx, request FROM _position").fetchone()
    # The last request applied, by (log index, place in its entry): an
    # entry (a group commit) can hold several requests.
    done = tuple(row) if row else (0, -1)
    for attempt in range(1_000_000):
        node = nodes[attempt % len(nodes)]
        query = urllib.parse.urlencode({"from_index": max(done[0], 1), "tables": ",".join(tables)})
        try:
            with urllib.request.urlopen(f"http://{node}/api/v1/watch?{query}", timeout=120) as stream:
                request = []
                for line in stream:
                    if not line.strip():
                        continue  # keep-alive
                    change = json.loads(line)
                    if "error" in change:
                        raise RuntimeError(change["error"]["message"])
                    place = (change["index"], change["request"])
                    if place <= done:
                        continue  # applied before the stream broke
                    request.append(change)
                    if change["last_in_request"]:
                        db.execute("BEGIN")
                        try:
                            for each in request:
                                apply(db, each)
                            db.execute("INSERT OR REPLACE INTO _position VALUES (0, ?, ?)", place)
                            db.execute("COMMIT")
                        except BaseException:
                            db.execute("ROLLBACK")
                            raise
                        done, request = place, []
        except urllib.error.HTTPError as error:
            body = json.loads(error.read() or b"{}")
            if error.code == 410:
                sys.exit(body["error"]["message"])
            print(f"{node}: HTTP {error.code}: {body}; trying the next node", file=sys.stderr)
        except (OSError, RuntimeError, json.JSONDecodeError) as error:
            print(f"{node}: {error}; trying the next node", file=sys.stderr)
        time.sleep(0.5)


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    follow(sqlite3.connect(sys.argv[1], isolation_level=None), sys.argv[2].split(","), sys.argv[3:])
