//! Durability under `kill -9`: concurrent clients insert; the server is
//! killed mid-stream and restarted; every acknowledged statement is present
//! exactly once, every present statement is whole, and no row is torn. A
//! large COPY (a bulk append) is all or nothing when the process dies while
//! it streams or between the renames that commit it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::harness::{scalar, staged_bulks, wait_for, Server};

const CLIENTS: i32 = 8;
const ROWS_PER_STATEMENT: i32 = 5;

fn payload(client: i32, stmt: i64, row: i32) -> String {
    // Long enough that frames span many pages, so a torn write is likely
    // to cut through one.
    format!(
        "c{client}-s{stmt}-r{row}-{}",
        "x".repeat(200 + (stmt % 7) as usize * 50)
    )
}

async fn insert_until_killed(
    conninfo: String,
    client_id: i32,
    acked: Arc<Mutex<BTreeSet<(i32, i64)>>>,
) {
    let Ok((client, conn)) = tokio_postgres::connect(&conninfo, tokio_postgres::NoTls).await else {
        return;
    };
    tokio::spawn(async move {
        let _ = conn.await;
    });
    for stmt in 0i64.. {
        let values: Vec<String> = (0..ROWS_PER_STATEMENT)
            .map(|row| {
                format!(
                    "({client_id}, {stmt}, {row}, '{}')",
                    payload(client_id, stmt, row)
                )
            })
            .collect();
        let sql = format!("INSERT INTO c VALUES {}", values.join(", "));
        match client.execute(sql.as_str(), &[]).await {
            Ok(n) => {
                assert_eq!(n, ROWS_PER_STATEMENT as u64);
                acked.lock().unwrap().insert((client_id, stmt));
            }
            Err(_) => return,
        }
    }
}

async fn check_exactly_once(server: &Server, acked: &BTreeSet<(i32, i64)>) -> usize {
    let client = server.client().await;
    let rows = client
        .query("SELECT client, stmt, \"row\", payload FROM c", &[])
        .await
        .unwrap();
    let mut per_statement: BTreeMap<(i32, i64), Vec<i32>> = BTreeMap::new();
    for r in &rows {
        let (c, s, row, p): (i32, i64, i32, String) = (r.get(0), r.get(1), r.get(2), r.get(3));
        assert_eq!(p, payload(c, s, row), "torn or mixed row");
        per_statement.entry((c, s)).or_default().push(row);
    }
    for ((c, s), mut rows) in per_statement.clone() {
        rows.sort_unstable();
        assert_eq!(
            rows,
            (0..ROWS_PER_STATEMENT).collect::<Vec<_>>(),
            "statement ({c}, {s}) is partial or duplicated"
        );
    }
    let missing: Vec<_> = acked
        .iter()
        .filter(|k| !per_statement.contains_key(k))
        .collect();
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
    per_statement.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_ingest_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(dir.path());
    server
        .client()
        .await
        .batch_execute(
            "CREATE STREAM c (client INT NOT NULL, stmt BIGINT NOT NULL, \"row\" INT NOT NULL, payload TEXT NOT NULL) \
             WITH (shards = 4, partition_key = 'stmt')",
        )
        .await
        .unwrap();

    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    for round in 0..2 {
        let tasks: Vec<_> = (0..CLIENTS)
            .map(|id| {
                tokio::spawn(insert_until_killed(
                    server.conninfo(),
                    id + round * 100,
                    acked.clone(),
                ))
            })
            .collect();
        // Kill once clients are well into their inserts.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while acked.lock().unwrap().len() < 200 * (round as usize + 1) {
            assert!(std::time::Instant::now() < deadline, "inserts are too slow");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        server.kill9();
        for t in tasks {
            t.await.unwrap();
        }
        server = Server::start_in(dir.path());
        let acked_now = acked.lock().unwrap().clone();
        let present = check_exactly_once(&server, &acked_now).await;
        assert!(present >= acked_now.len());
    }
}

/// Stream `big` of [`csv_rows`]'s rows over three shards, for large COPYs.
pub(crate) async fn create_big(client: &tokio_postgres::Client) {
    client
        .batch_execute(
            "CREATE STREAM big (id BIGINT NOT NULL, body TEXT) WITH (shards = 3, partition_key = 'id')",
        )
        .await
        .unwrap();
}

/// CSV of `rows` rows `id,payload` starting at `from`, ~100 bytes a row.
pub(crate) fn csv_rows(from: i64, rows: i64) -> String {
    (from..from + rows)
        .map(|i| format!("{i},payload-{i}-{}\n", "z".repeat(80)))
        .collect()
}

pub(crate) async fn copy_csv(
    client: &tokio_postgres::Client,
    data: &str,
) -> Result<u64, tokio_postgres::Error> {
    use futures::SinkExt;
    let sink = client
        .copy_in::<_, bytes::Bytes>("COPY big FROM STDIN WITH (FORMAT csv)")
        .await?;
    futures::pin_mut!(sink);
    for chunk in data.as_bytes().chunks(256 * 1024) {
        sink.send(bytes::Bytes::copy_from_slice(chunk)).await?;
    }
    sink.finish().await
}

/// A large COPY is written to the log while it arrives and committed at
/// its end by renaming a segment into each shard. The process dies after
/// the first rename (fail point), and separately under `kill -9` while the
/// COPY is still streaming: after a restart the COPY is absent from every
/// shard, acknowledged rows are all there once, nothing is left staged, and
/// the same COPY then succeeds and survives another restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_copy_is_all_or_nothing_across_crashes() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let config = dir.path().join("sluice.toml");
    std::fs::write(&config, "[limits]\nmax_statement_bytes = 1048576\n").unwrap();
    let rows = 40_000;
    let bulk = csv_rows(0, rows);
    let count =
        async |server: &Server| scalar(&server.client().await, "SELECT count(*) FROM big").await;

    let mut server = Server::spawn_with(
        &data_dir,
        Some(&config),
        &[("SLUICE_FAIL_POINT", "log.bulk_after_first_rename")],
    );
    let client = server.client().await;
    create_big(&client).await;
    assert_eq!(copy_csv(&client, &csv_rows(-100, 100)).await.unwrap(), 100);
    assert!(
        copy_csv(&client, &bulk).await.is_err(),
        "the server died at commit"
    );
    assert!(!server.wait_exit(Duration::from_secs(30)).success());

    let mut server = Server::spawn_with(&data_dir, Some(&config), &[]);
    assert_eq!(
        count(&server).await,
        100,
        "the torn COPY was cut from every shard"
    );
    assert_eq!(staged_bulks(&data_dir), 0, "no staging files are left");

    // kill -9 while the COPY is still streaming.
    let client = server.client().await;
    let streaming = tokio::spawn({
        let data = bulk.repeat(10);
        async move { copy_csv(&client, &data).await }
    });
    wait_for(
        "the COPY to be staged",
        Duration::from_secs(30),
        async || staged_bulks(&data_dir) > 0,
    )
    .await;
    server.kill9();
    assert!(streaming.await.unwrap().is_err());

    let mut server = Server::spawn_with(&data_dir, Some(&config), &[]);
    assert_eq!(
        count(&server).await,
        100,
        "the unfinished COPY left nothing"
    );
    assert_eq!(staged_bulks(&data_dir), 0);
    assert_eq!(
        copy_csv(&server.client().await, &bulk).await.unwrap(),
        rows as u64
    );
    server.terminate();

    let server = Server::spawn_with(&data_dir, Some(&config), &[]);
    let client = server.client().await;
    assert_eq!(count(&server).await, 100 + rows);
    assert_eq!(
        scalar(&client, "SELECT count(DISTINCT id) FROM big").await,
        100 + rows,
        "every row once"
    );
}

/// The process dies after a multi-shard statement's frames reached one
/// shard's file and before the others' (a fail point there): after the
/// restart none of the statement is present, in any shard.
#[tokio::test]
async fn a_statement_torn_across_shards_by_a_crash_is_absent_after_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut server = Server::spawn_with(
        &data,
        None,
        &[("SLUICE_FAIL_POINT", "log.group_after_first_shard")],
    );
    let client = server.client().await;
    client
        .batch_execute("CREATE STREAM t (k BIGINT) WITH (shards = 4, partition_key = 'k')")
        .await
        .unwrap();
    let values: Vec<String> = (0..40).map(|k| format!("({k})")).collect();
    let insert = format!("INSERT INTO t VALUES {}", values.join(", "));
    assert!(
        client.batch_execute(&insert).await.is_err(),
        "the process died"
    );
    let status = server.wait_exit(Duration::from_secs(30));
    assert!(!status.success());
    let server = Server::start_in(&data);
    let client = server.client().await;
    assert_eq!(scalar(&client, "SELECT count(*) FROM t").await, 0);
    client.batch_execute(&insert).await.unwrap();
    assert_eq!(scalar(&client, "SELECT count(*) FROM t").await, 40);
}
