//! A stream's schema changes under its sink and its derived streams: the
//! sink's files of three versions read together (the sink table, an
//! external table, DuckDB, pyarrow, Polars), each file naming its version; derived
//! streams keep their declared columns until `ALTER STREAM … AS SELECT`
//! moves them on, exactly once.

use std::path::Path;
use std::time::Duration;

use datafusion::parquet::file::reader::{FileReader, SerializedFileReader};
use tokio_postgres::Client;

use crate::harness::{python_json, scalar, sqlstate, wait_for, Server};
use crate::sinks::{insert_range, parquet_files, CLICKS};

/// Rows `from..to` of clicks in its newest shape.
fn insert_with(from: i64, to: i64, status: &str, country: &str) -> String {
    format!(
        "INSERT INTO clicks (event_time, n, url, status, country) \
         SELECT CAST(to_timestamp_seconds(1795600800 + n * 60) AS TIMESTAMP), n, '/q', {status}, '{country}' \
         FROM (SELECT unnest(range({from}, {to})) AS n)"
    )
}

/// Runs each statement in order; a failure names it.
async fn run_all(client: &Client, statements: &[String]) {
    for sql in statements {
        if let Err(e) = client.batch_execute(sql).await {
            panic!("{sql}: {e:?}");
        }
    }
}

async fn count(client: &Client, sql: &str) -> i64 {
    scalar(client, sql).await
}

fn file_versions(dir: &Path) -> Vec<String> {
    let mut versions: Vec<String> = parquet_files(dir)
        .iter()
        .map(|path| {
            let reader = SerializedFileReader::new(std::fs::File::open(path).unwrap()).unwrap();
            reader
                .metadata()
                .file_metadata()
                .key_value_metadata()
                .and_then(|kv| kv.iter().find(|k| k.key == "sluice.schema_version"))
                .and_then(|k| k.value.clone())
                .unwrap_or_default()
        })
        .collect();
    versions.sort();
    versions.dedup();
    versions
}

#[tokio::test]
async fn a_sink_and_derived_streams_across_three_versions() {
    let server = Server::start();
    let client = server.client().await;
    client.batch_execute(CLICKS).await.unwrap();
    client
        .batch_execute(
            "CREATE STREAM everything AS SELECT * FROM clicks; \
             CREATE STREAM slim AS SELECT n, status FROM clicks; \
             CREATE SINK lake FROM clicks WITH (location = 'lake', rollover_interval = '1 h')",
        )
        .await
        .unwrap();
    run_all(
        &client,
        &[
            insert_range("clicks", 0, 100),
            "FLUSH SINK lake".into(),
            "ALTER STREAM clicks ADD COLUMN country TEXT".into(),
            insert_with(100, 200, "200", "fr"),
            "FLUSH SINK lake".into(),
            "ALTER STREAM clicks ALTER COLUMN status TYPE BIGINT".into(),
            insert_with(200, 300, "5000000000", "de"),
            "FLUSH SINK lake".into(),
        ],
    )
    .await;

    // The sink table: every file, missing columns NULL, types widened.
    assert_eq!(count(&client, "SELECT count(*) FROM lake").await, 300);
    assert_eq!(
        count(&client, "SELECT count(*) FROM lake WHERE country IS NULL").await,
        100
    );
    assert_eq!(
        count(
            &client,
            "SELECT count(*) FROM lake WHERE status = 5000000000"
        )
        .await,
        100
    );
    let lake = server.data_dir().join("lake");
    assert_eq!(file_versions(&lake), ["1", "2", "3"]);
    // An external table over the same files, given their merged schema.
    client
        .batch_execute(&format!(
            "CREATE EXTERNAL TABLE ext STORED AS PARQUET LOCATION '{}/'",
            lake.display()
        ))
        .await
        .unwrap();
    assert_eq!(
        count(
            &client,
            "SELECT count(*) FROM ext WHERE status = 5000000000 AND country = 'de'"
        )
        .await,
        100
    );
    assert_eq!(
        count(&client, "SELECT count(*) FROM ext WHERE country IS NULL").await,
        100
    );
    // Other engines listing the directory.
    let readers = python_json(
        "evolved_readers.py",
        &[lake.to_string_lossy().as_ref()],
        &[],
    );
    for (reader, status) in [
        ("duckdb", "BIGINT"),
        ("pyarrow", "int64"),
        ("polars", "Int64"),
    ] {
        let seen = &readers[reader];
        assert_eq!(seen["rows"], 300, "{reader}: {seen}");
        assert_eq!(seen["country_nulls"], 100, "{reader}: {seen}");
        assert_eq!(seen["big"], 100, "{reader}: {seen}");
        assert_eq!(seen["status"], status, "{reader}: {seen}");
    }

    // Derived streams keep their declared columns: `SELECT *` did not grow,
    // and a status too wide for their INT went to sluice.errors.
    wait_for("pipelines", Duration::from_secs(20), async || {
        count(&client, "SELECT count(*) FROM everything").await == 200
            && count(
                &client,
                "SELECT count(*) FROM sluice.errors WHERE pipeline = 'everything'",
            )
            .await
                == 100
    })
    .await;
    let everything: Vec<String> = client
        .query("SELECT column_name FROM information_schema.columns WHERE table_name = 'everything' ORDER BY ordinal_position", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(everything, ["event_time", "n", "url", "status"]);
    // A column a pipeline reads cannot go.
    let err = client
        .batch_execute("ALTER STREAM clicks DROP COLUMN url")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "2BP01");
    let message = err
        .as_db_error()
        .map(|e| e.message().to_string())
        .unwrap_or_default();
    assert!(message.contains("stream everything"), "{message}");
    assert!(
        !message.contains("lake"),
        "the sink does not use url: {message}"
    );

    // slim moves on: the new query from where the old one stopped.
    client
        .batch_execute("ALTER STREAM slim AS SELECT n, status, country FROM clicks")
        .await
        .unwrap();
    client
        .batch_execute(&insert_with(300, 310, "7000000000", "it"))
        .await
        .unwrap();
    wait_for("slim", Duration::from_secs(20), async || {
        count(
            &client,
            "SELECT count(*) FROM slim WHERE country = 'it' AND status = 7000000000",
        )
        .await
            == 10
    })
    .await;
    assert_eq!(
        count(&client, "SELECT count(*) - count(DISTINCT n) FROM slim").await,
        0
    );
    assert_eq!(count(&client, "SELECT count(*) FROM slim").await, 210);
    assert_eq!(
        count(
            &client,
            "SELECT count(*) FROM sluice.schemas WHERE stream = 'slim'"
        )
        .await,
        2
    );
}

/// A Delta sink records the change in the Delta log: an added column
/// (`ADD COLUMN` in the table's history, NULL in older files), a dropped
/// one kept in the table and NULL in newer files; a type change is refused.
#[tokio::test]
async fn a_delta_sink_follows_added_and_dropped_columns() {
    let server = Server::start();
    let client = server.client().await;
    client.batch_execute(CLICKS).await.unwrap();
    client
        .batch_execute("CREATE SINK lake FROM clicks WITH (location = 'lake', format = 'delta', rollover_interval = '1 h')")
        .await
        .unwrap();
    run_all(
        &client,
        &[insert_range("clicks", 0, 100), "FLUSH SINK lake".into()],
    )
    .await;
    let err = client
        .batch_execute("ALTER STREAM clicks ALTER COLUMN status TYPE BIGINT")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "0A000");
    run_all(
        &client,
        &[
            "ALTER STREAM clicks ADD COLUMN country TEXT".into(),
            insert_with(100, 200, "200", "fr"),
            "FLUSH SINK lake".into(),
            "ALTER STREAM clicks DROP COLUMN url".into(),
            "INSERT INTO clicks (event_time, n, status, country) \
             SELECT CAST(to_timestamp_seconds(1795600800 + n * 60) AS TIMESTAMP), n, 200, 'de' \
             FROM (SELECT unnest(range(200, 250)) AS n)"
                .into(),
            "FLUSH SINK lake".into(),
        ],
    )
    .await;
    // A compaction merges files written before and after the changes:
    // the dropped column's values stay in its output.
    crate::delta::until_compacted(&client, "lake", || {}).await;
    let lake = server.data_dir().join("lake");
    let seen = crate::delta::read_delta_at(lake.to_string_lossy().as_ref(), None, &[]);
    assert_eq!(seen["rows"], 250, "{seen}");
    assert_eq!(seen["distinct"], 250, "{seen}");
    assert!(seen["schema"].get("country").is_some(), "{seen}");
    assert!(seen["schema"].get("url").is_some(), "{seen}");
    // 200 distinct URLs, and NULL in the rows written after the DROP.
    let urls = crate::delta::delta_py(&["read", lake.to_string_lossy().as_ref(), "url"], &[]);
    assert_eq!(urls["distinct"], 9, "{urls}");
    let operations = seen["operations"].to_string();
    assert!(operations.contains("ADD COLUMN"), "{operations}");
    assert!(operations.contains("OPTIMIZE"), "{operations}");
    client
        .batch_execute(&format!(
            "CREATE EXTERNAL TABLE dl STORED AS DELTA LOCATION '{}'",
            lake.display()
        ))
        .await
        .unwrap();
    assert_eq!(
        count(&client, "SELECT count(*) FROM dl WHERE country IS NULL").await,
        100
    );
    assert_eq!(
        count(&client, "SELECT count(*) FROM dl WHERE url IS NULL").await,
        50
    );
    assert_eq!(count(&client, "SELECT count(*) FROM lake").await, 250);
}

/// `ALTER STREAM … ADD COLUMN` under a PostgreSQL sink whose target
/// table lacks the column: the sink keeps delivering the columns the
/// target has (it used to stall, retrying "column does not exist"), and
/// once the target gains the column its values arrive too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_sink_delivers_the_columns_its_target_has() {
    let tmp = tempfile::tempdir().unwrap();
    let pg = crate::postgres_sink::with_target(tmp.path()).await;
    let server = Server::start();
    let client = server.client().await;
    crate::postgres_sink::clicks_with(&client, 10).await;
    client
        .batch_execute(&format!(
            "CREATE SINK pg FROM clicks WITH (location = '{}', table = 'clicks_pg', batch_interval = '100 ms')",
            pg.url()
        ))
        .await
        .unwrap();
    client.batch_execute("FLUSH SINK pg").await.unwrap();
    run_all(
        &client,
        &[
            "ALTER STREAM clicks ADD COLUMN country TEXT".into(),
            insert_with(10, 20, "200", "fr"),
        ],
    )
    .await;
    client.batch_execute("FLUSH SINK pg").await.unwrap();
    assert_eq!(
        crate::postgres_sink::target_values(&pg).await,
        (0..20).collect::<Vec<i64>>()
    );
    let target = pg.client().await;
    target
        .batch_execute("ALTER TABLE clicks_pg ADD COLUMN country text")
        .await
        .unwrap();
    let mut next = 20;
    wait_for(
        "the new column's values in the target",
        Duration::from_secs(40),
        async || {
            client
                .batch_execute(&insert_with(next, next + 1, "200", "de"))
                .await
                .unwrap();
            next += 1;
            client.batch_execute("FLUSH SINK pg").await.unwrap();
            let de = target
                .query_one("SELECT count(*) FROM clicks_pg WHERE country = 'de'", &[])
                .await
                .unwrap()
                .get::<_, i64>(0);
            de > 0
        },
    )
    .await;
    let values = crate::postgres_sink::target_values(&pg).await;
    assert_eq!(values, (0..next).collect::<Vec<i64>>(), "each row once");
    assert_eq!(
        count(&client, "SELECT count(*) FROM sluice.errors").await,
        0,
        "no row refused"
    );
}
