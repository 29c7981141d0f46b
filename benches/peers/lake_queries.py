"""Runs the ad hoc queries of benches/delivery.rs on the same Parquet files
with DuckDB and DataFusion (Python packages), in process. Prints one JSON
object: {engine: {query: {"cold_ms": x, "warm_ms": median, "result": str}}}.
An engine whose package is missing is reported as {"missing": "why"}.

usage: lake_queries.py <dataset dir> <warm runs>
"""

import json
import statistics
import sys
import time

QUERIES = {
    "count_one_hour": "SELECT count(*) FROM lake WHERE dt = '2026-11-25' AND hour = 12",
    "top10_urls": "SELECT url, count(*) AS c, avg(latency_ms) AS avg_latency FROM lake GROUP BY url ORDER BY c DESC, url LIMIT 10",
    "distinct_users": "SELECT count(DISTINCT user_id) FROM lake WHERE status = 500 AND hour BETWEEN 8 AND 11",
    "user_events": "SELECT event_time, url, status FROM lake WHERE user_id = 4242 ORDER BY event_time DESC LIMIT 100",
}


def timed(run, warm):
    start = time.perf_counter()
    first = run()
    cold = (time.perf_counter() - start) * 1e3
    times = []
    for _ in range(warm):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1e3)
    return {"cold_ms": cold, "warm_ms": statistics.median(times), "result": first}


def duckdb_engine(root, warm):
    import duckdb

    con = duckdb.connect()
    con.execute(
        f"CREATE VIEW lake AS SELECT * FROM read_parquet('{root}/dt=*/**/*.parquet', hive_partitioning = true, "
        "hive_types = {'dt': VARCHAR, 'hour': INTEGER})"
    )
    return {
        name: timed(lambda sql=sql: str(con.execute(sql).fetchall()[:1]), warm)
        for name, sql in QUERIES.items()
    }


def datafusion_engine(root, warm):
    import datafusion
    import pyarrow as pa

    ctx = datafusion.SessionContext()
    ctx.register_parquet(
        "lake",
        root,
        table_partition_cols=[("dt", pa.string()), ("hour", pa.int32())],
        file_extension=".parquet",
    )
    def run(sql):
        rows = [r for batch in ctx.sql(sql).collect() for r in batch.to_pylist()]
        return str(rows[:1])

    return {name: timed(lambda sql=sql: run(sql), warm) for name, sql in QUERIES.items()}


def main():
    root, warm = sys.argv[1], int(sys.argv[2])
    out = {}
    for name, engine in (("duckdb", duckdb_engine), ("datafusion", datafusion_engine)):
        try:
            out[name] = engine(root, warm)
        except ImportError as e:
            out[name] = {"missing": str(e)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
