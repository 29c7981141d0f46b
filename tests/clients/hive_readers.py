"""Reads a sink's directory the way other engines do (listing it, with
Hive partition inference) and prints what each infers.

Usage: python3 hive_readers.py DIRECTORY
Prints one JSON object: reader -> {"rows", "dt", "hour", "hours"}.
"""
import json
import sys

import duckdb
import polars as pl
import pyarrow.dataset as ds

root = sys.argv[1]
glob = f"{root}/**/*.parquet"
out = {}

con = duckdb.connect()
rel = con.sql(f"SELECT * FROM read_parquet('{glob}', hive_partitioning = true)")
types = dict(zip(rel.columns, [str(t) for t in rel.types]))
hours = sorted(r[0] for r in con.sql(f"SELECT DISTINCT hour FROM read_parquet('{glob}', hive_partitioning = true)").fetchall())
rows = con.sql(f"SELECT count(*) FROM read_parquet('{glob}', hive_partitioning = true)").fetchall()[0][0]
out["duckdb"] = {"rows": rows, "dt": types["dt"], "hour": types["hour"], "hours": hours}

frame = pl.scan_parquet(glob, hive_partitioning=True).collect()
out["polars"] = {"rows": frame.height, "dt": str(frame.schema["dt"]), "hour": str(frame.schema["hour"]),
                 "hours": sorted(frame["hour"].unique().to_list())}

table = ds.dataset(root, format="parquet", partitioning="hive").to_table()
out["pyarrow"] = {"rows": table.num_rows, "dt": str(table.schema.field("dt").type),
                  "hour": str(table.schema.field("hour").type),
                  "hours": sorted(set(table.column("hour").to_pylist()))}
print(json.dumps(out))
