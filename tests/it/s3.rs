//! Sinks and external tables on S3, against an S3-compatible server
//! (s3s-fs) started by the test: delivery, a multipart upload, a crash
//! between upload and commit, the store being down for a while, and a
//! Delta sink read back over the S3 API.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::delta::{read_delta_at, sluice_partitions, until_compacted};
use crate::harness::{scalar, sqlstate, wait_for, Server};
use crate::sinks::{assert_exactly_once, delivered_values, insert_range, parquet_files, CLICKS};

const KEY_ID: &str = "test";
const SECRET: &str = "testsecret";
const PART_SIZE_BYTES: u64 = 5 * 1024 * 1024;

/// An in-process S3 server on its own runtime, so the test can take it
/// down (every connection closed) and bring it back on the same port.
struct S3Server {
    addr: SocketAddr,
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl S3Server {
    fn start(root: &Path, addr: SocketAddr) -> S3Server {
        let root = root.to_path_buf();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                use hyper_util::rt::{TokioExecutor, TokioIo};
                use hyper_util::server::conn::auto::Builder;
                let mut builder =
                    s3s::service::S3ServiceBuilder::new(s3s_fs::FileSystem::new(&root).unwrap());
                builder.set_auth(s3s::auth::SimpleAuth::from_single(KEY_ID, SECRET));
                let service = builder.build();
                let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                tokio::spawn(async move {
                    while let Ok((socket, _)) = listener.accept().await {
                        let service = service.clone();
                        tokio::spawn(async move {
                            let _ = Builder::new(TokioExecutor::new())
                                .serve_connection(TokioIo::new(socket), service)
                                .await;
                        });
                    }
                });
            });
            let _ = stop_rx.recv();
            rt.shutdown_background();
        });
        S3Server {
            addr: addr_rx.recv().unwrap(),
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// Closes the listener and every connection.
    fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn config(dir: &Path, addr: SocketAddr) -> PathBuf {
    let path = dir.join("sluice.toml");
    std::fs::write(
        &path,
        format!(
            "[s3]\nendpoint = \"http://{addr}\"\nregion = \"us-east-1\"\nallow_http = true\n\
             [limits]\nupload_part_size_bytes = {PART_SIZE_BYTES}\n\
             [auth]\nallowed_locations = [\"s3://lake/\", \"s3://no-such-bucket/\"]\n"
        ),
    )
    .unwrap();
    path
}

fn start(data: &Path, config: &Path, fail_point: Option<&str>) -> Server {
    let mut env = vec![
        ("AWS_ACCESS_KEY_ID", KEY_ID),
        ("AWS_SECRET_ACCESS_KEY", SECRET),
    ];
    if let Some(point) = fail_point {
        env.push(("SLUICE_FAIL_POINT", point));
    }
    Server::spawn_with(data, Some(config), &env)
}

/// 32 hex digits per `k`, pseudo-random so Parquet cannot compress them away.
fn noise(k: i64) -> String {
    let mut x = (k as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = String::new();
    for _ in 0..2 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.push_str(&format!("{x:016x}"));
    }
    out
}

#[tokio::test]
async fn s3_delivery_multipart_crash_and_outage() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("s3");
    std::fs::create_dir_all(root.join("lake")).unwrap();
    let mut s3 = S3Server::start(&root, "127.0.0.1:0".parse().unwrap());
    let config = config(tmp.path(), s3.addr);
    let data = tmp.path().join("data");
    let delivered = root.join("lake/clicks");

    // A bucket that does not exist fails the DDL and creates nothing.
    let mut server = start(&data, &config, Some("sink.after_upload"));
    {
        let client = server.client().await;
        client
            .batch_execute(
                "CREATE STREAM clicks (n BIGINT NOT NULL, payload TEXT) WITH (shards = 2)",
            )
            .await
            .unwrap();
        let err = client
            .batch_execute(
                "CREATE SINK nowhere FROM clicks WITH (location = 's3://no-such-bucket/x/')",
            )
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&err), "58030", "{err}");
        // A bucket the configuration does not list is not SQL's to use,
        // whatever the server's credentials reach.
        let err = client
            .batch_execute("CREATE SINK other FROM clicks WITH (location = 's3://other-bucket/x/')")
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&err), "42501", "{err}");
        assert_eq!(
            scalar(&client, "SELECT count(*) FROM sluice.sinks").await,
            0
        );

        // First run dies after its files are uploaded, before the commit.
        client
            .batch_execute(
                "INSERT INTO clicks SELECT n, 'p' FROM (SELECT unnest(range(0, 1000)) AS n)",
            )
            .await
            .unwrap();
        // No compaction: the external table below lists the directory,
        // which holds a compaction's inputs and output together during the
        // grace period (see ARCHITECTURE.md, known limits).
        client
            .batch_execute("CREATE SINK lake FROM clicks WITH (location = 's3://lake/clicks/', rollover_interval = '200 ms', compaction = 'off')")
            .await
            .unwrap();
    }
    assert!(!server.wait_exit(Duration::from_secs(30)).success());
    assert!(!parquet_files(&delivered).is_empty(), "the upload happened");

    // Restart: uncommitted objects are removed, the replay delivers once.
    let mut server = start(&data, &config, None);
    let client = server.client().await;
    client.batch_execute("FLUSH SINK lake").await.unwrap();
    assert_exactly_once(delivered_values(&delivered, "n"), 0..1000);
    assert_eq!(scalar(&client, "SELECT count(*) FROM lake").await, 1000);

    // A file larger than an upload part goes up as a multipart upload (a
    // sink that rolls only on FLUSH, so the COPY makes one file per shard).
    client
        .batch_execute("CREATE SINK big FROM clicks WITH (location = 's3://lake/big/', rollover_interval = '1 h', start = 'latest')")
        .await
        .unwrap();
    let rows: i64 = 480_000;
    let sink = client
        .copy_in("COPY clicks (n, payload) FROM STDIN WITH (FORMAT csv)")
        .await
        .unwrap();
    let mut csv = String::new();
    for k in 1000..1000 + rows {
        csv.push_str(&format!(
            "{k},{}{}{}\n",
            noise(k),
            noise(k + 1),
            noise(k + 2)
        ));
    }
    use futures::SinkExt;
    let mut sink = Box::pin(sink);
    sink.send(bytes::Bytes::from(csv)).await.unwrap();
    sink.as_mut().finish().await.unwrap();
    client
        .batch_execute("FLUSH SINK lake; FLUSH SINK big")
        .await
        .unwrap();
    let largest = parquet_files(&root.join("lake/big"))
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().len())
        .max()
        .unwrap();
    assert!(largest > PART_SIZE_BYTES, "largest file {largest} bytes");
    assert_exactly_once(
        delivered_values(&root.join("lake/big"), "n"),
        1000..1000 + rows,
    );
    assert_exactly_once(delivered_values(&delivered, "n"), 0..1000 + rows);

    // The store goes down: the sink retries and says so; FLUSH fails with
    // the storage error; nothing is lost.
    s3.stop();
    client
        .batch_execute("INSERT INTO clicks SELECT n, 'late' FROM (SELECT unnest(range(1000000, 1000500)) AS n)")
        .await
        .unwrap();
    let err = client.batch_execute("FLUSH SINK lake").await.unwrap_err();
    assert_eq!(sqlstate(&err), "58030", "{err}");
    wait_for(
        "the sink to report retrying",
        Duration::from_secs(30),
        async || {
            let row = client
                .query_one(
                    "SELECT state, last_error, lag_records FROM sluice.sinks WHERE name = 'lake'",
                    &[],
                )
                .await
                .unwrap();
            row.get::<_, &str>(0) == "retrying"
                && row.get::<_, Option<&str>>(1).is_some()
                && row.get::<_, i64>(2) == 500
        },
    )
    .await;
    let s3 = S3Server::start(&root, s3.addr);
    // Caught up: every record committed, and the state back to running
    // (cleared once the committed files are also moved to their final
    // names, a store round trip after the lag reaches 0).
    wait_for(
        "the sink to catch up and run again",
        Duration::from_secs(60),
        async || {
            let row = client
                .query_one(
                    "SELECT state, lag_records FROM sluice.sinks WHERE name = 'lake'",
                    &[],
                )
                .await
                .unwrap();
            row.get::<_, &str>(0) == "running" && row.get::<_, i64>(1) == 0
        },
    )
    .await;
    let mut got = delivered_values(&delivered, "n");
    let late = got.split_off(got.partition_point(|n| *n < 1_000_000));
    assert_exactly_once(got, 0..1000 + rows);
    assert_exactly_once(late, 1_000_000..1_000_500);
    let want_len = 1000 + rows + 500;

    // Athena-style: an external table over the delivered objects.
    client
        .batch_execute("CREATE EXTERNAL TABLE on_s3 STORED AS PARQUET LOCATION 's3://lake/clicks/'")
        .await
        .unwrap();
    assert_eq!(
        scalar(&client, "SELECT count(*) FROM on_s3").await,
        want_len
    );

    // A restart while the store is down: the sink is there, retrying, and
    // catches up once the store is back.
    let mut s3 = s3;
    s3.stop();
    drop(client);
    assert!(server.terminate().success());
    let server = start(&data, &config, None);
    let client = server.client().await;
    client
        .batch_execute("INSERT INTO clicks SELECT n, 'after restart' FROM (SELECT unnest(range(2000000, 2000100)) AS n)")
        .await
        .unwrap();
    wait_for(
        "the restarted sink to report retrying",
        Duration::from_secs(30),
        async || {
            client
                .query_one("SELECT state FROM sluice.sinks WHERE name = 'lake'", &[])
                .await
                .unwrap()
                .get::<_, &str>(0)
                == "retrying"
        },
    )
    .await;
    // The external table over S3 could not be opened at this start.
    let err = client
        .batch_execute("SELECT count(*) FROM on_s3")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42P01");
    let s3 = S3Server::start(&root, s3.addr);
    client.batch_execute("FLUSH SINK lake").await.unwrap();
    let mut got = delivered_values(&delivered, "n");
    let after = got.split_off(got.partition_point(|n| *n < 2_000_000));
    assert_eq!(got.len() as i64, want_len, "nothing delivered twice");
    assert_exactly_once(after, 2_000_000..2_000_100);
    // … and is back once its files can be read again.
    wait_for(
        "the external table to reopen",
        Duration::from_secs(40),
        async || {
            client
                .batch_execute("SELECT count(*) FROM on_s3")
                .await
                .is_ok()
        },
    )
    .await;
    assert_eq!(
        scalar(&client, "SELECT count(*) FROM on_s3").await,
        want_len + 100
    );
    drop(s3);
}

#[tokio::test]
async fn s3_credentials_come_from_the_shared_profile() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("s3");
    std::fs::create_dir_all(root.join("lake")).unwrap();
    let s3 = S3Server::start(&root, "127.0.0.1:0".parse().unwrap());
    let config = config(tmp.path(), s3.addr);
    let home = tmp.path().join("home");
    std::fs::create_dir_all(home.join(".aws")).unwrap();
    std::fs::write(
        home.join(".aws/credentials"),
        format!("[default]\naws_access_key_id = wrong\naws_secret_access_key = wrong\n\n[lake]\naws_access_key_id = {KEY_ID}\naws_secret_access_key = {SECRET}\n"),
    )
    .unwrap();
    let home_text = home.to_string_lossy().to_string();
    let server = Server::spawn_with(
        &tmp.path().join("data"),
        Some(&config),
        &[("HOME", home_text.as_str()), ("AWS_PROFILE", "lake")],
    );
    let client = server.client().await;
    client
        .batch_execute(
            "CREATE STREAM p (n BIGINT NOT NULL); \
             CREATE SINK p_lake FROM p WITH (location = 's3://lake/profiled/'); \
             INSERT INTO p VALUES (1), (2), (3); FLUSH SINK p_lake",
        )
        .await
        .unwrap();
    assert_eq!(scalar(&client, "SELECT sum(n) FROM p_lake").await, 6);
    assert_exactly_once(delivered_values(&root.join("lake/profiled"), "n"), 1..4);
    drop(s3);
}

/// A Delta sink on S3: its log's commits go through S3 conditional writes,
/// and delta-rs and Polars read the table over the S3 API with the rows
/// per partition sluice's own table has, before and after compaction.
#[tokio::test]
async fn delta_sink_on_s3_reads_back_through_the_s3_api() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("s3");
    std::fs::create_dir_all(root.join("lake")).unwrap();
    let s3 = S3Server::start(&root, "127.0.0.1:0".parse().unwrap());
    let config = config(tmp.path(), s3.addr);
    let server = start(&tmp.path().join("data"), &config, None);
    let client = server.client().await;
    client.batch_execute(CLICKS).await.unwrap();
    client
        .batch_execute(
            "CREATE SINK lake FROM clicks WITH (location = 's3://lake/delta/', format = 'delta', \
             rollover_interval = '1 h', compaction_min_files = 3)",
        )
        .await
        .unwrap();
    for round in 0..3 {
        client
            .batch_execute(&insert_range("clicks", round * 100, (round + 1) * 100))
            .await
            .unwrap();
        client.batch_execute("FLUSH SINK lake").await.unwrap();
    }
    let endpoint = format!("http://{}", s3.addr);
    let env = [
        ("SLUICE_TEST_S3_ENDPOINT", endpoint.as_str()),
        ("AWS_ACCESS_KEY_ID", KEY_ID),
        ("AWS_SECRET_ACCESS_KEY", SECRET),
    ];
    let read = read_delta_at("s3://lake/delta", None, &env);
    assert_eq!(read["rows"], 300, "{read}");
    assert_eq!(read["distinct"], 300, "{read}");
    assert_eq!(read["polars_rows"], 300, "{read}");
    assert_eq!(read["partitions"], sluice_partitions(&client, "lake").await);

    until_compacted(&client, "lake", || {}).await;
    let after = read_delta_at("s3://lake/delta", None, &env);
    assert_eq!(after["rows"], 300, "{after}");
    assert_eq!(after["distinct"], 300, "{after}");
    // The log lists exactly the files sluice's catalog does, after an
    // OPTIMIZE commit (compaction may already have run before `read`).
    assert!(
        after["operations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o == "OPTIMIZE"),
        "{after}"
    );
    assert!(after["files"].as_i64() <= read["files"].as_i64(), "{after}");
    assert_eq!(
        after["files"].as_i64().unwrap(),
        scalar(
            &client,
            "SELECT files FROM sluice.sinks WHERE name = 'lake'"
        )
        .await
    );
    assert_eq!(
        after["partitions"],
        sluice_partitions(&client, "lake").await
    );
    drop(s3);
}
