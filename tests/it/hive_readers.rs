//! Readers that list a sink's directory (DuckDB, Polars, pyarrow) infer
//! the partition columns' types from the directory names: `hour` must be
//! an integer to all of them, as it is in sluice's own table, including
//! the hours before 10 (`hour=00` reads as text in DuckDB, hence
//! `hour=0`); `dt` is a date to sluice, DuckDB and Polars (pyarrow infers
//! only integers and strings, README says how to declare it).

use crate::harness::{python_json, scalar, Server};

#[tokio::test]
async fn duckdb_polars_and_pyarrow_infer_the_partition_types_sluice_uses() {
    let server = Server::start();
    let client = server.client().await;
    client
        .batch_execute(
            "CREATE STREAM ev (at TIMESTAMP NOT NULL, n BIGINT); \
             CREATE SINK lake FROM ev WITH (location = 'lake', rollover_interval = '1 h')",
        )
        .await
        .unwrap();
    // Hours 08 to 11: single and double digits.
    let values: Vec<String> = (0..40)
        .map(|n| format!("('2026-11-25 {:02}:{:02}:00', {n})", 8 + n / 10, n % 60))
        .collect();
    client
        .batch_execute(&format!("INSERT INTO ev VALUES {}", values.join(", ")))
        .await
        .unwrap();
    client.batch_execute("FLUSH SINK lake").await.unwrap();
    assert_eq!(scalar(&client, "SELECT count(*) FROM lake").await, 40);
    let own: Vec<(String, String)> = client
        .query(
            "SELECT column_name, data_type FROM information_schema.columns \
             WHERE table_name = 'lake' AND column_name IN ('dt', 'hour') ORDER BY column_name",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        own,
        [
            ("dt".into(), "date".into()),
            ("hour".into(), "integer".into())
        ]
    );

    let lake = server.data_dir().join("lake");
    let readers = python_json("hive_readers.py", &[lake.to_string_lossy().as_ref()], &[]);
    for (reader, dt, hour) in [
        ("duckdb", "DATE", "BIGINT"),
        ("polars", "Date", "Int64"),
        ("pyarrow", "string", "int32"),
    ] {
        let seen = &readers[reader];
        assert_eq!(seen["rows"], 40, "{reader}: {seen}");
        assert_eq!(seen["hour"], hour, "{reader}: {seen}");
        assert_eq!(seen["dt"], dt, "{reader}: {seen}");
        assert_eq!(
            seen["hours"],
            serde_json::json!([8, 9, 10, 11]),
            "{reader}: {seen}"
        );
    }
}
