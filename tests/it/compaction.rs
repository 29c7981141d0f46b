//! Small-file compaction, sort order and bloom filters of sink files:
//! many small files of a partition become one, sorted, swapped atomically
//! while queries run; the old files go after the grace period. Plain
//! Parquet sinks compact only when asked (`compaction = 'on'`).

use std::time::Duration;

use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::{Int64Type, TimestampMicrosecondType};
use datafusion::parquet::file::reader::{FileReader, SerializedFileReader};

use crate::harness::{scalar, wait_for, Server};
use crate::sinks::{assert_exactly_once, delivered_values, parquet_files, read_parquet};

/// 2020-01-01 12:00:00 UTC in seconds since the epoch: a day long closed,
/// whatever the clock says.
const NOON_UTC: i64 = 1_577_880_000;

#[tokio::test]
async fn small_files_merge_into_one_sorted_file_atomically() {
    let server = Server::start_with_config("[limits]\ncompaction_grace_ms = 300\n");
    let client = server.client().await;
    client
        .batch_execute(
            "CREATE STREAM ev (event_time TIMESTAMP NOT NULL, n BIGINT NOT NULL, user_id BIGINT) WITH (event_time = 'event_time'); \
             CREATE SINK merged FROM ev WITH (location = 'merged', time_partition = 'day', rollover_interval = '100 ms', \
               compaction = 'on', compaction_min_files = 4, bloom_filter_columns = 'user_id'); \
             CREATE SINK kept FROM ev WITH (location = 'kept', time_partition = 'day', rollover_interval = '100 ms')",
        )
        .await
        .unwrap();
    // Six statements, each committed as its own small file; event times
    // run backwards so that sorting shows.
    for k in 0..6i64 {
        client
            .batch_execute(&format!(
                "INSERT INTO ev SELECT CAST(to_timestamp_seconds({NOON_UTC} - n) AS TIMESTAMP), n, n % 17 \
                 FROM (SELECT unnest(range({}, {})) AS n)",
                k * 100,
                k * 100 + 100
            ))
            .await
            .unwrap();
        let want = (k + 1) * 100;
        wait_for("a small commit", Duration::from_secs(10), async || {
            scalar(&client, "SELECT count(*) FROM kept").await == want
        })
        .await;
    }
    let sum: i64 = (0..600).sum();
    // Queries running through the compaction see every row exactly once.
    let conninfo = server.conninfo();
    let reader = tokio::spawn(async move {
        let (client, conn) = tokio_postgres::connect(&conninfo, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut checked = 0;
        loop {
            let row = client
                .query_one("SELECT count(*), sum(n), max(files) FROM merged, (SELECT files FROM sluice.sinks WHERE name = 'merged')", &[])
                .await
                .unwrap();
            let (count, total, files): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
            if count == 600 {
                assert_eq!(total, sum);
                checked += 1;
            }
            if files == 1 && count == 600 {
                return checked;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    wait_for(
        "compaction into one file",
        Duration::from_secs(30),
        async || {
            scalar(
                &client,
                "SELECT files FROM sluice.sinks WHERE name = 'merged'",
            )
            .await
                == 1
        },
    )
    .await;
    assert!(reader.await.unwrap() > 0);
    let row = client
        .query_one(
            "SELECT compactions, files_compacted, rows FROM sluice.sinks WHERE name = 'merged'",
            &[],
        )
        .await
        .unwrap();
    assert!(row.get::<_, i64>(0) >= 1);
    assert!(row.get::<_, i64>(1) >= 6);
    assert_eq!(row.get::<_, i64>(2), 600);
    assert_eq!(
        scalar(
            &client,
            "SELECT files FROM sluice.sinks WHERE name = 'kept'"
        )
        .await,
        6,
        "a plain Parquet sink does not compact unless asked: listing readers would see both sets"
    );

    // After the grace period only the merged file is left on disk.
    let dir = server.data_dir().join("merged");
    wait_for("old files to go", Duration::from_secs(10), async || {
        parquet_files(&dir).len() == 1
    })
    .await;
    assert_exactly_once(delivered_values(&dir, "n"), 0..600);
    let file = &parquet_files(&dir)[0];
    let times: Vec<i64> = read_parquet(file)
        .iter()
        .flat_map(|b| {
            b.column_by_name("event_time")
                .unwrap()
                .as_primitive::<TimestampMicrosecondType>()
                .values()
                .to_vec()
        })
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "sorted by event time"
    );
    let reader = SerializedFileReader::new(std::fs::File::open(file).unwrap()).unwrap();
    let user_id = reader
        .metadata()
        .file_metadata()
        .schema_descr()
        .columns()
        .iter()
        .position(|c| c.name() == "user_id")
        .unwrap();
    assert!(
        reader
            .metadata()
            .row_group(0)
            .column(user_id)
            .bloom_filter_offset()
            .is_some(),
        "bloom filter on user_id"
    );
    assert_eq!(
        scalar(&client, "SELECT count(*) FROM merged WHERE user_id = 5").await,
        (0..600).filter(|n| n % 17 == 5).count() as i64
    );
}

#[tokio::test]
async fn sort_by_orders_rows_within_files() {
    let server = Server::start();
    let client = server.client().await;
    client
        .batch_execute(
            "CREATE STREAM s (n BIGINT NOT NULL, user_id BIGINT); \
             CREATE SINK sorted FROM s WITH (location = 'sorted', sort_by = 'user_id, n', compaction = 'off')",
        )
        .await
        .unwrap();
    client
        .batch_execute(
            "INSERT INTO s SELECT n, (n * 7919) % 1000 FROM (SELECT unnest(range(0, 5000)) AS n)",
        )
        .await
        .unwrap();
    client.batch_execute("FLUSH SINK sorted").await.unwrap();
    let dir = server.data_dir().join("sorted");
    assert_exactly_once(delivered_values(&dir, "n"), 0..5000);
    for file in parquet_files(&dir) {
        let users: Vec<i64> = read_parquet(&file)
            .iter()
            .flat_map(|b| {
                b.column_by_name("user_id")
                    .unwrap()
                    .as_primitive::<Int64Type>()
                    .values()
                    .to_vec()
            })
            .collect();
        assert!(users.windows(2).all(|w| w[0] <= w[1]), "{}", file.display());
    }
    let err = client
        .batch_execute("CREATE SINK bad FROM s WITH (location = 'x', sort_by = 'nope')")
        .await
        .unwrap_err();
    assert_eq!(crate::harness::sqlstate(&err), "42703");
}

/// The values of `column` in `file`, in file order.
fn column_values(file: &std::path::Path, column: &str) -> Vec<i64> {
    read_parquet(file)
        .iter()
        .flat_map(|b| {
            b.column_by_name(column)
                .unwrap()
                .as_primitive::<Int64Type>()
                .values()
                .to_vec()
        })
        .collect()
}

/// With `sort_by`, a worker's file is sorted per row group, not as a
/// whole; compaction merges the row groups as sorted runs (without
/// decoding a file whole) into one file sorted as a whole.
#[tokio::test]
async fn compaction_merges_sorted_row_groups_into_one_sorted_file() {
    let server = Server::start_with_config("[limits]\ncompaction_grace_ms = 300\n");
    let client = server.client().await;
    client
        .batch_execute(
            "CREATE STREAM s (n BIGINT NOT NULL, user_id BIGINT); \
             CREATE SINK sorted FROM s WITH (location = 'sorted', sort_by = 'user_id', \
               rollover_interval = '1 h', compaction = 'on', compaction_min_files = 3)",
        )
        .await
        .unwrap();
    // The first file holds more than one row group (128 Ki rows each).
    let sizes = [300_000i64, 100, 100];
    let mut from = 0;
    for size in sizes {
        client
            .batch_execute(&format!(
                "INSERT INTO s SELECT n, (n * 7919) % 1000 FROM (SELECT unnest(range({from}, {})) AS n)",
                from + size
            ))
            .await
            .unwrap();
        client.batch_execute("FLUSH SINK sorted").await.unwrap();
        from += size;
    }
    let dir = server.data_dir().join("sorted");
    let first = parquet_files(&dir)
        .into_iter()
        .max_by_key(|f| std::fs::metadata(f).unwrap().len())
        .unwrap();
    let groups = SerializedFileReader::new(std::fs::File::open(&first).unwrap())
        .unwrap()
        .metadata()
        .num_row_groups();
    assert!(groups >= 2, "the large file has {groups} row group(s)");
    let users = column_values(&first, "user_id");
    assert!(
        !users.windows(2).all(|w| w[0] <= w[1]),
        "a worker's file is sorted per row group only"
    );
    wait_for(
        "compaction into one file",
        Duration::from_secs(60),
        async || parquet_files(&dir).len() == 1,
    )
    .await;
    let file = &parquet_files(&dir)[0];
    assert_exactly_once(delivered_values(&dir, "n"), 0..from);
    let users = column_values(file, "user_id");
    assert!(users.windows(2).all(|w| w[0] <= w[1]), "sorted as a whole");
    assert_eq!(scalar(&client, "SELECT count(*) FROM sorted").await, from);
}
