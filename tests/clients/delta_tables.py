"""Reads or writes Delta tables with delta-rs's Python package (and Polars),
as engines other than sluice do.

Usage:
  python3 delta_tables.py read TABLE COLUMN [VERSION]
    TABLE is a directory or s3://bucket/prefix (endpoint and keys from
    SLUICE_TEST_S3_ENDPOINT, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY);
    prints {"version", "rows", "distinct", "files", "partition_columns",
            "stats_rows", "operations", "schema", "polars_rows",
            "partitions": {"<dt>/<hour>": rows}}
  python3 delta_tables.py write TABLE_DIR
    writes version 0 (3 rows) and version 1 (2 more rows), partitioned by `region`
"""
import json
import os
import sys

import deltalake
import polars as pl
import pyarrow as pa

mode, root = sys.argv[1], sys.argv[2]

if mode == "write":
    first = pa.table({"id": pa.array([1, 2, 3], pa.int64()),
                      "region": ["eu", "us", "eu"],
                      "amount": pa.array([1.5, 2.5, 3.5], pa.float64())})
    deltalake.write_deltalake(root, first, partition_by=["region"])
    second = pa.table({"id": pa.array([4, 5], pa.int64()),
                       "region": ["us", "ap"],
                       "amount": pa.array([4.5, 5.5], pa.float64())})
    deltalake.write_deltalake(root, second, partition_by=["region"], mode="append")
    print(json.dumps({"version": deltalake.DeltaTable(root).version()}))
    sys.exit(0)

column = sys.argv[3]
version = int(sys.argv[4]) if len(sys.argv) > 4 else None
options = None
if root.startswith("s3://"):
    options = {"AWS_ENDPOINT_URL": os.environ["SLUICE_TEST_S3_ENDPOINT"],
               "AWS_ACCESS_KEY_ID": os.environ["AWS_ACCESS_KEY_ID"],
               "AWS_SECRET_ACCESS_KEY": os.environ["AWS_SECRET_ACCESS_KEY"],
               "AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true"}
table = deltalake.DeltaTable(root, version=version, storage_options=options)
data = table.to_pyarrow_table()
values = data.column(column).to_pylist()
adds = pa.table(table.get_add_actions(flatten=True)).to_pydict()
history = table.history()
out = {
    "version": table.version(),
    "rows": data.num_rows,
    "distinct": len(set(values)),
    "files": len(table.file_uris()),
    "partition_columns": table.metadata().partition_columns,
    "stats_rows": sum(n for n in adds.get("num_records", []) if n is not None),
    "operations": [h.get("operation") for h in history],
    "schema": {f.name: str(f.type) for f in data.schema},
    "polars_rows": pl.read_delta(root, version=version, storage_options=options).height,
    "partitions": {},
    "configuration": table.metadata().configuration,
}
if "dt" in data.column_names and "hour" in data.column_names:
    counts = data.group_by(["dt", "hour"]).aggregate([(column, "count")]).to_pylist()
    out["partitions"] = {f"{r['dt']}/{r['hour']}": r[f"{column}_count"] for r in counts}
print(json.dumps(out))
