//! Sinks end to end: the exact Hive layout on disk, rollover by size and
//! by age, pruning, exactly-once delivery across crashes at every step of
//! a commit, dead letters at delivery, external tables and CTAS across a
//! restart. Delivered files are read back with the `parquet` crate, not
//! through sluice.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::datatypes::Int64Type;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::harness::{explain, scalar, sqlstate, wait_for, Server};

/// Every `.parquet` file under `dir`, recursively, sorted.
pub fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "parquet") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

pub fn read_parquet(path: &Path) -> Vec<RecordBatch> {
    let file = std::fs::File::open(path).unwrap();
    ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap()
        .map(|b| b.unwrap())
        .collect()
}

/// The values of BIGINT column `column` in every file under `dir`,
/// sorted, duplicates kept: what any reader of the directory sees.
pub fn delivered_values(dir: &Path, column: &str) -> Vec<i64> {
    let mut values = Vec::new();
    for file in parquet_files(dir) {
        for batch in read_parquet(&file) {
            let col = batch.column_by_name(column).unwrap();
            values.extend(col.as_primitive::<Int64Type>().iter().flatten());
        }
    }
    values.sort();
    values
}

/// `values` (sorted) hold each of `want` exactly once; reports the first
/// difference instead of two long lists.
pub fn assert_exactly_once(values: Vec<i64>, want: std::ops::Range<i64>) {
    let expected: Vec<i64> = want.collect();
    if values != expected {
        let at = values
            .iter()
            .zip(&expected)
            .position(|(a, b)| a != b)
            .unwrap_or(values.len().min(expected.len()));
        panic!(
            "{} values, expected {}; first difference at index {at}: got {:?}, expected {:?}",
            values.len(),
            expected.len(),
            values.get(at),
            expected.get(at)
        );
    }
}

/// `INSERT … SELECT` of `n` in `[from, to)` with event times one minute apart
/// from 2026-11-25 10:00 UTC, status 200/404/NULL by n % 3.
pub fn insert_range(table: &str, from: i64, to: i64) -> String {
    format!(
        "INSERT INTO {table} SELECT CAST(to_timestamp_seconds({HOUR_10_UTC} + n * 60) AS TIMESTAMP), n, \
         concat('/p', CAST(n % 7 AS TEXT)), CASE n % 3 WHEN 0 THEN 200 WHEN 1 THEN 404 ELSE NULL END \
         FROM (SELECT unnest(range({from}, {to})) AS n)"
    )
}

/// 2026-11-25 10:00:00 UTC in seconds since the epoch.
const HOUR_10_UTC: i64 = 1_795_600_800;

pub const CLICKS: &str = "CREATE STREAM clicks (event_time TIMESTAMP NOT NULL, n BIGINT NOT NULL, url TEXT, status INT) \
                      WITH (shards = 2, partition_key = 'n', event_time = 'event_time')";

#[tokio::test]
async fn hive_layout_on_disk_and_pruning() {
    let server = Server::start();
    let client = server.client().await;
    client.batch_execute(CLICKS).await.unwrap();
    client
        .batch_execute("CREATE SINK lake FROM clicks WITH (location = 'lake', partition_by = 'status', rollover_interval = '1 h')")
        .await
        .unwrap();
    client
        .batch_execute(&insert_range("clicks", 0, 600))
        .await
        .unwrap();
    // Buffered in open uploads: nothing visible, on disk or in the table.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let lake = server.data_dir().join("lake");
    assert!(parquet_files(&lake).is_empty());
    assert_eq!(scalar(&client, "SELECT count(*) FROM lake").await, 0);

    client.batch_execute("FLUSH SINK lake").await.unwrap();
    assert_exactly_once(delivered_values(&lake, "n"), 0..600);
    assert_eq!(scalar(&client, "SELECT count(*) FROM lake").await, 600);

    // The exact directories: UTC hour of the event time, then status.
    let expected: BTreeSet<String> = (0..600i64)
        .map(|n| {
            let status = match n % 3 {
                0 => "200",
                1 => "404",
                _ => "__HIVE_DEFAULT_PARTITION__",
            };
            format!("dt=2026-11-25/hour={:02}/status={status}", 10 + n / 60)
        })
        .collect();
    let files = parquet_files(&lake);
    let dirs: BTreeSet<String> = files
        .iter()
        .map(|f| {
            f.parent()
                .unwrap()
                .strip_prefix(&lake)
                .unwrap()
                .to_string_lossy()
                .to_string()
        })
        .collect();
    assert_eq!(dirs, expected);
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        let parts: Vec<&str> = name.trim_end_matches(".parquet").split('-').collect();
        assert_eq!(parts.len(), 4, "{name}");
        assert_eq!(parts[0], "part");
        assert!(parts[2].len() == 4 && parts[3].len() == 20, "{name}");
        // Partition columns live in the path, not in the file.
        let batches = read_parquet(file);
        let schema = batches[0].schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["event_time", "n", "url"]);
    }

    // One hour reads one hour's files.
    let physical = explain(
        &client,
        "EXPLAIN SELECT count(url) FROM lake WHERE dt = '2026-11-25' AND hour = 12",
    )
    .await;
    assert!(physical.contains("hour=12/"), "{physical}");
    for other in ["hour=10/", "hour=11/", "hour=13/", "hour=19/"] {
        assert!(!physical.contains(other), "{other} scanned: {physical}");
    }
    assert_eq!(
        scalar(
            &client,
            "SELECT count(url) FROM lake WHERE dt = '2026-11-25' AND hour = 12"
        )
        .await,
        60
    );
    assert_eq!(
        scalar(&client, "SELECT count(*) FROM lake WHERE status IS NULL").await,
        200
    );
    // Statistics pruning inside files: a point lookup's plan carries the
    // min/max predicate to the Parquet reader.
    let plan = explain(&client, "EXPLAIN SELECT url FROM lake WHERE n = 42").await;
    assert!(plan.contains("pruning_predicate"), "{plan}");

    let row = client
        .query_one("SELECT files, rows, lag_records, state, location FROM sluice.sinks WHERE name = 'lake'", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), files.len() as i64);
    assert_eq!(row.get::<_, i64>(1), 600);
    assert_eq!(row.get::<_, i64>(2), 0);
    assert_eq!(row.get::<_, &str>(3), "running");
    assert!(row.get::<_, &str>(4).starts_with("file:///"));
    let (out, _, ok) = server.psql("SHOW SINKS;\n");
    assert!(
        ok && out.contains("lake") && out.contains("clicks"),
        "{out}"
    );
}

#[tokio::test]
async fn rollover_by_age_and_by_size() {
    let server = Server::start();
    let client = server.client().await;
    client.batch_execute(CLICKS).await.unwrap();
    client
        .batch_execute(
            "CREATE SINK by_age FROM clicks WITH (location = 'age', time_partition = 'none', rollover_interval = '300 ms'); \
             CREATE SINK by_size FROM clicks WITH (location = 'size', time_partition = 'none', rollover_interval = '1 h', rollover_size = '1 kB')",
        )
        .await
        .unwrap();
    // Age: committed without FLUSH, soon after the interval.
    client
        .batch_execute(&insert_range("clicks", 0, 10))
        .await
        .unwrap();
    wait_for("the age rollover", Duration::from_secs(10), async || {
        scalar(&client, "SELECT count(*) FROM by_age").await == 10
    })
    .await;
    // Size: each statement fills a file past 1 kB; the interval is
    // an hour, so only the size can commit them.
    for i in 0..4i64 {
        client
            .batch_execute(&insert_range("clicks", 10 + i * 1000, 1010 + i * 1000))
            .await
            .unwrap();
        let want = 1010 + i * 1000;
        wait_for("the size rollover", Duration::from_secs(10), async || {
            scalar(&client, "SELECT count(*) FROM by_size").await == want
        })
        .await;
    }
    let files = parquet_files(&server.data_dir().join("size"));
    assert!(files.len() >= 4, "{files:?}");
    assert_exactly_once(
        delivered_values(&server.data_dir().join("size"), "n"),
        0..4010,
    );
}

#[tokio::test]
async fn undeliverable_records_go_to_errors_with_stage_delivery() {
    let server = Server::start();
    let client = server.client().await;
    client
        .batch_execute(
            "CREATE STREAM tags (n BIGINT NOT NULL, tag TEXT); \
             CREATE SINK by_tag FROM tags WITH (location = 'tags', partition_by = 'tag')",
        )
        .await
        .unwrap();
    let long = "x".repeat(300);
    client
        .batch_execute(&format!(
            "INSERT INTO tags VALUES (1, 'a/b'), (2, '{long}'), (3, NULL), (4, 'a/b')"
        ))
        .await
        .unwrap();
    client.batch_execute("FLUSH SINK by_tag").await.unwrap();
    let rows = client
        .query("SELECT n, tag FROM by_tag ORDER BY n", &[])
        .await
        .unwrap();
    let got: Vec<(i64, Option<String>)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        got,
        vec![(1, Some("a/b".into())), (3, None), (4, Some("a/b".into()))]
    );
    // Hive escaping of the separator.
    assert!(server.data_dir().join("tags/tag=a%2Fb").is_dir());
    assert!(server
        .data_dir()
        .join("tags/tag=__HIVE_DEFAULT_PARTITION__")
        .is_dir());
    let dead = client
        .query_one(
            "SELECT stream, pipeline, stage, error_code, raw FROM sluice.errors WHERE stage = 'delivery'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(dead.get::<_, &str>(0), "tags");
    assert_eq!(dead.get::<_, &str>(1), "by_tag");
    assert_eq!(dead.get::<_, &str>(3), "54000");
    assert!(dead.get::<_, &str>(4).contains("\"n\":2"));
    assert_eq!(
        scalar(
            &client,
            "SELECT errors FROM sluice.sinks WHERE name = 'by_tag'"
        )
        .await,
        1
    );
    // Failures are delivered like any data (Firehose's error prefix).
    client
        .batch_execute("CREATE SINK failures FROM sluice.errors WITH (location = 'errors'); FLUSH SINK failures")
        .await
        .unwrap();
    let row = client
        .query_one(
            "SELECT stream, stage, error_code, CAST(dt AS TEXT) FROM failures",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, &str>(0), "tags");
    assert_eq!(row.get::<_, &str>(1), "delivery");
    assert_eq!(row.get::<_, &str>(2), "54000");
    assert_eq!(row.get::<_, String>(3).len(), "2026-11-26".len());
}

#[tokio::test]
async fn tables_over_files_survive_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let external = tmp.path().join("external");
    let config = tmp.path().join("sluice.toml");
    std::fs::write(
        &config,
        format!("[auth]\nallowed_locations = [\"{}\"]\n", external.display()),
    )
    .unwrap();
    let mut server = Server::spawn_with(&data, Some(&config), &[]);
    let client = server.client().await;
    client.batch_execute(CLICKS).await.unwrap();
    client
        .batch_execute("CREATE SINK lake FROM clicks WITH (location = 'lake')")
        .await
        .unwrap();
    client
        .batch_execute(&insert_range("clicks", 0, 300))
        .await
        .unwrap();
    client.batch_execute("FLUSH SINK lake").await.unwrap();
    std::fs::create_dir_all(external.join("region=eu")).unwrap();
    std::fs::write(external.join("region=eu/a.csv"), "a,b\n1,x\n2,y\n").unwrap();
    client
        .batch_execute(&format!(
            "CREATE EXTERNAL TABLE hive_order (event_time TIMESTAMP, n BIGINT, url TEXT) PARTITIONED BY (dt TEXT, hour TEXT) \
               STORED AS PARQUET LOCATION 'file://{}/lake/'; \
             CREATE EXTERNAL TABLE csv_data (a INT, b TEXT) STORED AS CSV PARTITIONED BY (region TEXT) LOCATION '{}/' OPTIONS ('format.has_header' 'true'); \
             CREATE TABLE per_url AS SELECT url, count(*) AS c FROM lake GROUP BY url",
            data.display(),
            external.display()
        ))
        .await
        .unwrap();
    assert_eq!(
        scalar(&client, "SELECT count(*) FROM hive_order WHERE hour = '12'").await,
        60
    );
    assert_eq!(scalar(&client, "SELECT sum(a) FROM csv_data").await, 3);
    assert_eq!(scalar(&client, "SELECT sum(c) FROM per_url").await, 300);
    assert!(data.join("warehouse/per_url/part-00000.parquet").is_file());
    // A partition added by another writer shows up at the next query.
    std::fs::create_dir_all(external.join("region=us")).unwrap();
    std::fs::write(external.join("region=us/b.csv"), "a,b\n10,z\n").unwrap();
    assert_eq!(scalar(&client, "SELECT sum(a) FROM csv_data").await, 13);
    assert_eq!(
        scalar(&client, "SELECT sum(a) FROM csv_data WHERE region = 'us'").await,
        10
    );
    drop(client);
    assert!(server.terminate().success());

    let server = Server::spawn_with(&data, Some(&config), &[]);
    let client = server.client().await;
    assert_eq!(
        scalar(&client, "SELECT count(*) FROM hive_order").await,
        300
    );
    assert_eq!(scalar(&client, "SELECT sum(c) FROM per_url").await, 300);
    assert_eq!(scalar(&client, "SELECT count(*) FROM lake").await, 300);
    // Dropping an external table leaves its data; a CTAS table is ours.
    client
        .batch_execute("DROP TABLE csv_data, per_url, hive_order")
        .await
        .unwrap();
    assert!(external.join("region=us/b.csv").is_file());
    assert_eq!(parquet_files(&data.join("lake")).len(), 10);
    wait_for("the CTAS data to go", Duration::from_secs(5), async || {
        !data.join("warehouse/per_url").exists()
    })
    .await;
    let err = client
        .batch_execute("SELECT * FROM per_url")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42P01");
    // A dropped sink's files stay; a new sink at the same place does not
    // touch them.
    client.batch_execute("DROP SINK lake").await.unwrap();
    assert_eq!(parquet_files(&data.join("lake")).len(), 10);
}

/// The page-index metric of the Parquet scan in `EXPLAIN ANALYZE sql`, e.g.
/// `page_index_pages_pruned=5 total → 1 matched`.
async fn pages_pruned(client: &tokio_postgres::Client, sql: &str) -> String {
    let plan = explain(client, &format!("EXPLAIN ANALYZE {sql}")).await;
    let at = plan.find("page_index_pages_pruned=").expect(&plan);
    plan[at..].split(',').next().unwrap().to_string()
}

/// Page indexes are read where they can prune pages (a filter on file
/// columns, files of several pages a column), and skipped where they only
/// cost reads (small files).
#[tokio::test]
async fn page_indexes_are_read_only_where_they_can_prune() {
    let server = Server::start();
    let client = server.client().await;
    client
        .batch_execute(
            "CREATE STREAM big (n BIGINT NOT NULL); CREATE STREAM small (n BIGINT NOT NULL); \
             CREATE SINK big_lake FROM big WITH (location = 'big', time_partition = 'none', rollover_interval = '1 h'); \
             CREATE SINK small_lake FROM small WITH (location = 'small', time_partition = 'none', rollover_interval = '1 h'); \
             INSERT INTO big SELECT n FROM (SELECT unnest(range(0, 100000)) AS n); \
             INSERT INTO small SELECT n FROM (SELECT unnest(range(0, 1000)) AS n); \
             FLUSH SINK big_lake; FLUSH SINK small_lake",
        )
        .await
        .unwrap();
    // One file of 100 000 rows in order: five pages, four pruned.
    let big = pages_pruned(&client, "SELECT n FROM big_lake WHERE n = 4242").await;
    assert!(big.contains("=5 total → 1 matched"), "{big}");
    assert_eq!(
        scalar(&client, "SELECT count(*) FROM big_lake WHERE n = 4242").await,
        1
    );
    let small = pages_pruned(&client, "SELECT n FROM small_lake WHERE n = 42").await;
    assert!(small.contains("=0 total"), "{small}");
    assert_eq!(
        scalar(&client, "SELECT count(*) FROM small_lake WHERE n = 42").await,
        1
    );
}
