"""rqlite's own client libraries against a deeb node's HTTP API.

Usage: rqlite_clients.py HOST PORT [PORT...]   (runs against a follower
       among the ports given, found through GET /status)
       rqlite_clients.py --self-test            (the checker fails on a
       wrong value: exits non-zero)

pyrqlite (DB-API) runs a session of create, inserts with parameters of
every type, select, an update's row count, a failing statement and an
executemany transaction; then SQLAlchemy (through sqlalchemy-rqlite) does
the same through its ORM-free core. Exits non-zero, with the reason, if a
client raises unexpectedly or a value does not round-trip.
"""

import json
import sys
import urllib.request

import pyrqlite.dbapi2 as dbapi2


def check(what, got, expected):
    if got != expected:
        sys.exit(f"FAIL {what}: got {got!r}, expected {expected!r}")
    print(f"ok   {what}")


def pyrqlite_session(host, port):
    connection = dbapi2.connect(host=host, port=port)
    cursor = connection.cursor()
    cursor.execute("DROP TABLE IF EXISTS people")
    cursor.execute(
        "CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT, age INTEGER, height REAL, photo BLOB, note TEXT)"
    )
    rows = [
        ("fiona", 20, 1.62, b"\x00\x01\xfe\xff", None),
        ("o'brien; DROP TABLE people --", -7, 0.0, b"", "multi\nline \u2713"),
        ("big", 2**62, -1.5e300, bytes(range(256)), ""),
    ]
    for index, row in enumerate(rows, start=1):
        cursor.execute("INSERT INTO people(name, age, height, photo, note) VALUES(?, ?, ?, ?, ?)", row)
        check(f"pyrqlite insert {index} lastrowid", cursor.lastrowid, index)
    cursor.execute("SELECT name, age, height, photo, note FROM people ORDER BY id")
    check("pyrqlite rows round-trip", [tuple(row) for row in cursor.fetchall()], rows)
    cursor.execute("UPDATE people SET age = age + 1 WHERE age > 0")
    check("pyrqlite update rowcount", cursor.rowcount, 2)
    try:
        cursor.execute("INSERT INTO no_such_table VALUES (1)")
        sys.exit("FAIL pyrqlite: a failing statement did not raise")
    except dbapi2.Error as error:
        check("pyrqlite failing statement raises", "no such table" in str(error), True)
    cursor.executemany("INSERT INTO people(name) VALUES(?)", [("a",), ("b",), ("c",)])
    cursor.execute("SELECT count(*) FROM people")
    check("pyrqlite executemany count", cursor.fetchone()[0], 6)
    connection.close()


def sqlalchemy_session(host, port):
    from sqlalchemy import Column, Integer, LargeBinary, MetaData, String, Table, create_engine, func, select

    engine = create_engine(f"rqlite+pyrqlite://{host}:{port}/")
    metadata = MetaData()
    things = Table(
        "things",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("label", String(50)),
        Column("weight", Integer),
        Column("payload", LargeBinary),
    )
    metadata.drop_all(engine)
    metadata.create_all(engine)
    with engine.begin() as connection:
        result = connection.execute(things.insert().values(label="anvil", weight=50, payload=b"\x00\xff"))
        check("sqlalchemy insert primary key", result.inserted_primary_key[0], 1)
        connection.execute(things.insert(), [{"label": "feather", "weight": 0}, {"label": None, "weight": -1}])
    with engine.connect() as connection:
        rows = connection.execute(select(things.c.label, things.c.weight, things.c.payload).order_by(things.c.id)).all()
        check(
            "sqlalchemy rows round-trip",
            [tuple(row) for row in rows],
            [("anvil", 50, b"\x00\xff"), ("feather", 0, None), (None, -1, None)],
        )
        count = connection.execute(select(func.count()).select_from(things)).scalar()
        check("sqlalchemy count", count, 3)
    # (Reflection is left out: sqlalchemy-rqlite 2.0 reports no server
    # version, which SQLAlchemy's column reflection compares against.)


def a_follower(host, ports):
    """The first of `ports` whose node is a follower (or the only one)."""
    if len(ports) == 1:
        return ports[0]
    for port in ports:
        with urllib.request.urlopen(f"http://{host}:{port}/status", timeout=10) as answer:
            if json.load(answer)["store"]["raft"]["state"] == "Follower":
                return port
    sys.exit("FAIL no follower among the ports given")


if __name__ == "__main__":
    if sys.argv[1:] == ["--self-test"]:
        check("self-test: a wrong value is caught", 1, 2)
        sys.exit(0)
    host = sys.argv[1]
    port = a_follower(host, [int(port) for port in sys.argv[2:]])
    print(f"through the follower at {host}:{port}")
    pyrqlite_session(host, port)
    sqlalchemy_session(host, port)
    print("all rqlite client checks passed")
