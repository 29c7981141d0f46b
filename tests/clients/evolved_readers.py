"""Reads a sink's directory holding files of several schema versions the
way other engines do: DuckDB with union_by_name, pyarrow with the files'
schemas unified (permissive promotion: int32 and int64 give int64), Polars
given that schema (missing columns inserted as NULL, integers upcast).

Usage: python3 evolved_readers.py DIRECTORY
Prints one JSON object: reader -> {"rows", "country_nulls", "status", "big"}.
"""
import json
import sys

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

root = sys.argv[1]
glob = f"{root}/**/*.parquet"
out = {}

con = duckdb.connect()
source = f"read_parquet('{glob}', hive_partitioning = true, union_by_name = true)"
rel = con.sql(f"SELECT * FROM {source}")
types = dict(zip(rel.columns, [str(t) for t in rel.types]))
rows, nulls, big = con.sql(
    f"SELECT count(*), count(*) - count(country), count(*) FILTER (WHERE status > 2147483647) FROM {source}"
).fetchall()[0]
out["duckdb"] = {"rows": rows, "country_nulls": nulls, "status": types["status"], "big": big}

files = ds.dataset(root, format="parquet", partitioning="hive").files
schema = pa.unify_schemas([pq.read_schema(f) for f in files], promote_options="permissive")
table = ds.dataset(root, format="parquet", partitioning="hive", schema=schema).to_table()
status = table.column("status").to_pylist()
out["pyarrow"] = {
    "rows": table.num_rows,
    "country_nulls": table.column("country").null_count,
    "status": str(table.schema.field("status").type),
    "big": sum(1 for s in status if s is not None and s > 2147483647),
}
frame = pl.scan_parquet(
    glob,
    schema=pl.from_arrow(schema.empty_table()).schema,
    hive_partitioning=False,
    missing_columns="insert",
    cast_options=pl.ScanCastOptions(integer_cast="upcast"),
).collect()
out["polars"] = {
    "rows": frame.height,
    "country_nulls": frame["country"].null_count(),
    "status": str(frame.schema["status"]),
    "big": frame.filter(pl.col("status") > 2147483647).height,
}
print(json.dumps(out))
