"""asyncpg and pg8000 compatibility checks; prints one JSON object.

Usage: python3 compat_drivers.py HOST PORT USER DATABASE CREATE_STATEMENT
"""
import asyncio
import json
import sys

import asyncpg
import pg8000.native

host, port, user, database, create = sys.argv[1:6]
out = {}


async def with_asyncpg():
    conn = await asyncpg.connect(host=host, port=int(port), user=user, database=database)
    await conn.execute(create)
    out["asyncpg_select_one"] = await conn.fetchval("SELECT 1")
    await conn.executemany("INSERT INTO dv (id, name) VALUES ($1, $2)", [(1, "a"), (2, "b")])
    stmt = await conn.prepare("SELECT id, name FROM dv WHERE id > $1 ORDER BY id")
    out["asyncpg_prepared"] = [tuple(r) for r in await stmt.fetch(0)]
    out["asyncpg_columns"] = [a.name for a in stmt.get_attributes()]
    await conn.copy_records_to_table("dv", records=[(3, "c")], columns=["id", "name"])
    out["asyncpg_count"] = await conn.fetchval("SELECT count(*) FROM dv")
    await conn.close()


asyncio.run(with_asyncpg())

conn = pg8000.native.Connection(user, host=host, port=int(port), database=database)
conn.run("INSERT INTO dv (id, name) VALUES (:i, :n)", i=4, n="d")
out["pg8000_insert_row_count"] = conn.row_count
out["pg8000_rows"] = conn.run("SELECT id, name FROM dv WHERE id >= :i ORDER BY id", i=3)
out["pg8000_columns"] = [c["name"] for c in conn.columns]
conn.close()
print(json.dumps(out))
