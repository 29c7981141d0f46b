"""Client compatibility checks with psycopg 3, SQLAlchemy 2 and pandas.

Usage: python3 compat_psycopg.py HOST PORT USER CREATE_STATEMENT
CREATE_STATEMENT makes the table `ev (id bigint, name text, ts timestamp,
raw bytea)` (CREATE TABLE on PostgreSQL, CREATE STREAM on sluice), so the
same checks run against both. Prints one JSON object: check -> result.
"""
import datetime
import json
import sys

import pandas as pd
import psycopg
import sqlalchemy as sa

host, port, user, create = sys.argv[1:5]
dsn = f"host={host} port={port} user={user} dbname={'sluice' if user == 'sluice' else 'postgres'}"
out = {}


def check(name, fn):
    try:
        out[name] = {"ok": True, "value": fn()}
    except Exception as e:  # the finding is the failure itself
        out[name] = {"ok": False, "error": f"{type(e).__name__}: {e}".splitlines()[0]}


conn = psycopg.connect(dsn, autocommit=True)
conn.execute(create)

def version():
    text = conn.execute("SELECT version()").fetchone()[0]
    num = int(conn.execute("SHOW server_version_num").fetchone()[0])
    shown = conn.execute("SHOW server_version").fetchone()[0]
    return {"version": text.split()[1], "num_major": num // 10000, "shown_major": int(shown.split(".")[0]),
            "startup_major": conn.info.server_version // 10000}
check("version", version)

def savepoints():
    with conn.transaction():
        conn.execute("INSERT INTO ev (id, name) VALUES (1, 'outer')")
        with conn.transaction():  # SAVEPOINT / RELEASE
            conn.execute("INSERT INTO ev (id, name) VALUES (2, 'inner')")
    return conn.execute("SELECT count(*) FROM ev WHERE id IN (1, 2)").fetchone()[0]
check("savepoints", savepoints)

def executemany():
    cur = conn.cursor()
    cur.executemany("INSERT INTO ev (id, name) VALUES (%s, %s)", [(3, "a"), (4, "b"), (5, "c")])
    return cur.rowcount
check("executemany_rowcount", executemany)

def prepared():
    total = 0
    for i in range(10):
        total += conn.execute("INSERT INTO ev (id, name) VALUES (%s, %s)", (100 + i, "p"), prepare=True).rowcount
    return total
check("prepared_inserts", prepared)

def named_cursor():
    with conn.transaction():  # a server-side cursor lives in a transaction
        with conn.cursor(name="cc") as cc:
            cc.execute("SELECT id, name FROM ev WHERE id > %s ORDER BY id", (100,))
            columns = [d.name for d in cc.description]
            first = cc.fetchmany(2)
            return {"columns": columns, "first": first, "rest": len(cc.fetchall())}
check("named_cursor", named_cursor)

raw = bytes([0, 255, 254, 10, 13, 92])  # not UTF-8, with COPY's special bytes
def binary_copy():
    with conn.cursor().copy("COPY ev (id, name, ts, raw) FROM STDIN (FORMAT binary)") as copy:
        copy.set_types(["int8", "text", "timestamp", "bytea"])
        copy.write_row((7, "bin", datetime.datetime(2026, 1, 2, 3, 4, 5), raw))
    rows = []
    with conn.cursor().copy("COPY (SELECT id, name, ts, raw FROM ev WHERE id = 7) TO STDOUT (FORMAT binary)") as copy:
        copy.set_types(["int8", "text", "timestamp", "bytea"])
        rows = [(r[0], r[1], r[2].isoformat(), bytes(r[3]).hex()) for r in copy.rows()]
    with conn.cursor().copy("COPY (SELECT id FROM ev WHERE id < 0) TO STDOUT (FORMAT binary)") as copy:
        copy.set_types(["int8"])
        empty = list(copy.rows())
    return {"rows": rows, "empty": empty}
check("binary_copy", binary_copy)

check("serial_sequence", lambda: conn.execute("SELECT pg_get_serial_sequence('ev', 'id')").fetchone()[0])

engine = sa.create_engine(f"postgresql+psycopg://{user}@{host}:{port}/{'sluice' if user == 'sluice' else 'postgres'}")
def sqlalchemy_connect():
    with engine.connect() as c:
        return {"major": engine.dialect.server_version_info[0], "one": c.execute(sa.text("SELECT 1")).scalar()}
check("sqlalchemy_connect", sqlalchemy_connect)
check("sqlalchemy_has_table", lambda: sa.inspect(engine).has_table("ev"))
check("sqlalchemy_get_columns", lambda: [
    (c["name"], str(c["type"]), c["nullable"], c["default"]) for c in sa.inspect(engine).get_columns("ev")
])
# Key and index reflection (unnest(conkey), generate_subscripts) and a
# Table reflected whole, as declarative models do.
check("sqlalchemy_primary_key", lambda: sa.inspect(engine).get_pk_constraint("ev")["constrained_columns"])
check("sqlalchemy_indexes", lambda: sa.inspect(engine).get_indexes("ev"))
check("sqlalchemy_unique", lambda: sa.inspect(engine).get_unique_constraints("ev"))
check("sqlalchemy_autoload", lambda: [
    (c.name, str(c.type), c.nullable) for c in sa.Table("ev", sa.MetaData(), autoload_with=engine).columns
])
# Only the search path's relations: no system schemas' tables or views.
check("sqlalchemy_table_names", lambda: sorted(sa.inspect(engine).get_table_names()))
check("sqlalchemy_view_names", lambda: sorted(sa.inspect(engine).get_view_names()))

def pandas_roundtrip():
    frame = pd.DataFrame({"id": [200, 201], "name": ["x", "y"],
                          "ts": pd.to_datetime(["2026-01-02", "2026-01-03"])})
    frame.to_sql("ev", engine, if_exists="append", index=False)
    back = pd.read_sql("SELECT id, name FROM ev WHERE id >= 200 ORDER BY id", engine)
    return back.to_dict(orient="list")
check("pandas_roundtrip", pandas_roundtrip)

print(json.dumps(out))
