//! `ALTER STREAM`: versions in the catalog and `sluice.schemas`, old
//! records read in the new schema (NULL, DEFAULT, widened), ingest in the
//! new version at once, and crashes around an ALTER under concurrent
//! ingest. The refusals with their SQLSTATEs are in
//! `sql/streams/alter_refusals.slt`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::SinkExt;
use tokio_postgres::Client;

use crate::harness::{connect, scalar, Server};

type Row = (i64, Option<i64>, Option<String>, i32);

async fn rows(client: &Client) -> Vec<Row> {
    client
        .query("SELECT id, status, country, n FROM clicks ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

#[tokio::test]
async fn versions_old_records_and_new_ingest() {
    let mut server = Server::start();
    let client = server.client().await;
    client
        .batch_execute(
            "CREATE STREAM clicks (id BIGINT NOT NULL, status INT, email TEXT) WITH (shards = 2, partition_key = 'id'); \
             INSERT INTO clicks VALUES (1, 200, 'a@x'), (2, 404, 'b@x')",
        )
        .await
        .unwrap();
    client
        .batch_execute("ALTER STREAM clicks ADD COLUMN country TEXT")
        .await
        .unwrap();
    client
        .batch_execute("INSERT INTO clicks VALUES (3, 500, 'c@x', 'fr')")
        .await
        .unwrap();
    client
        .batch_execute("ALTER STREAM clicks ALTER COLUMN status TYPE BIGINT, ADD COLUMN n INT NOT NULL DEFAULT 7")
        .await
        .unwrap();
    // Wider than an INT, and n from its DEFAULT (not named).
    client
        .batch_execute("INSERT INTO clicks (id, status) VALUES (4, 5000000000)")
        .await
        .unwrap();
    client
        .batch_execute("ALTER STREAM clicks DROP COLUMN email")
        .await
        .unwrap();
    client
        .batch_execute("INSERT INTO clicks SELECT 5, 1, 'de', 9")
        .await
        .unwrap();
    // HTTP and COPY follow at once; a field or column not given takes the
    // DEFAULT.
    let response = reqwest::Client::new()
        .post(format!(
            "http://{}/v1/streams/clicks/records",
            server.http_addr
        ))
        .header("content-type", "application/x-ndjson")
        .body(r#"{"id": 6, "status": 2, "country": "es"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status().as_u16(),
        200,
        "{:?}",
        response.text().await
    );
    let copy = client
        .copy_in::<_, Bytes>("COPY clicks (id, country) FROM STDIN WITH (FORMAT csv)")
        .await
        .unwrap();
    futures::pin_mut!(copy);
    copy.send(Bytes::from_static(b"7,pt\n")).await.unwrap();
    assert_eq!(copy.finish().await.unwrap(), 1);
    let expected: Vec<Row> = vec![
        (1, Some(200), None, 7),
        (2, Some(404), None, 7),
        (3, Some(500), Some("fr".into()), 7),
        (4, Some(5_000_000_000), None, 7),
        (5, Some(1), Some("de".into()), 9),
        (6, Some(2), Some("es".into()), 7),
        (7, None, Some("pt".into()), 7),
    ];
    assert_eq!(rows(&client).await, expected);

    let versions: Vec<(i32, String, String)> = client
        .query(
            "SELECT version, columns, statement FROM sluice.schemas WHERE stream = 'clicks' ORDER BY version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(versions.len(), 4, "{versions:?}");
    assert_eq!(
        versions[0].1,
        "id bigint NOT NULL, status integer, email text"
    );
    assert_eq!(
        versions[3].1,
        "id bigint NOT NULL, status bigint, country text, n integer NOT NULL DEFAULT '7'"
    );
    assert_eq!(versions[3].2, "ALTER STREAM clicks DROP COLUMN email");
    assert!(versions[0]
        .2
        .starts_with("CREATE STREAM clicks (id bigint NOT NULL"));
    assert_eq!(
        scalar(
            &client,
            "SELECT CAST(schema_version AS BIGINT) FROM sluice.streams WHERE name = 'clicks'"
        )
        .await,
        4
    );
    let columns: Vec<(String, String)> = client
        .query(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'clicks' ORDER BY ordinal_position",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let names: Vec<(&str, &str)> = columns
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("id", "bigint"),
            ("status", "bigint"),
            ("country", "text"),
            ("n", "integer")
        ]
    );
    let (out, err, ok) = server.psql("\\d clicks");
    assert!(ok, "{err}");
    assert!(out.contains("country") && !out.contains("email"), "{out}");

    // Everything survives a crash: versions, old frames, their reading.
    server.kill9();
    let server = Server::start_in(server.data_dir());
    let client = server.client().await;
    assert_eq!(rows(&client).await, expected);
    assert_eq!(
        scalar(
            &client,
            "SELECT count(*) FROM sluice.schemas WHERE stream = 'clicks'"
        )
        .await,
        4
    );
}

/// Four clients insert while the stream gains a column; the process is
/// killed right after. Every acknowledged row is there once, with the
/// column when (and only when) it was written with it.
#[tokio::test]
async fn alter_during_ingest_from_four_clients_and_kill9() {
    let mut server = Server::start();
    let admin = server.client().await;
    admin
        .batch_execute("CREATE STREAM clicks (id BIGINT NOT NULL, status INT) WITH (shards = 4, partition_key = 'id')")
        .await
        .unwrap();
    let acked: Arc<Mutex<Vec<(i64, bool)>>> = Arc::default();
    let altered = Arc::new(tokio::sync::Notify::new());
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..4i64 {
        let client = connect(&server.conninfo()).await.unwrap();
        let (acked, done, altered) = (acked.clone(), done.clone(), altered.clone());
        clients.push(tokio::spawn(async move {
            let mut with_country = false;
            let notified = altered.notified();
            tokio::pin!(notified);
            let mut id = c;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                if !with_country && futures::poll!(notified.as_mut()).is_ready() {
                    with_country = true;
                }
                let sql = if with_country {
                    format!("INSERT INTO clicks (id, status, country) VALUES ({id}, 200, 'c{id}')")
                } else {
                    format!("INSERT INTO clicks (id, status) VALUES ({id}, 200)")
                };
                match client.batch_execute(&sql).await {
                    Ok(()) => acked.lock().unwrap().push((id, with_country)),
                    Err(_) => break,
                }
                id += 4;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    admin
        .batch_execute("ALTER STREAM clicks ADD COLUMN country TEXT")
        .await
        .unwrap();
    altered.notify_waiters();
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.kill9();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.iter().any(|a| a.1) && acked.iter().any(|a| !a.1),
        "{} rows",
        acked.len()
    );

    let server = Server::start_in(server.data_dir());
    let client = server.client().await;
    let stored: std::collections::HashMap<i64, Option<String>> = client
        .query("SELECT id, country FROM clicks", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        scalar(&client, "SELECT count(*) - count(DISTINCT id) FROM clicks").await,
        0,
        "a row is stored twice"
    );
    for (id, with_country) in acked {
        let country = stored
            .get(&id)
            .unwrap_or_else(|| panic!("acknowledged row {id} lost"));
        let want = with_country.then(|| format!("c{id}"));
        assert_eq!(country, &want, "row {id}");
    }
}

/// A crash inside the ALTER's catalog commit: the stream is as before,
/// whole, and the ALTER can be run again.
#[tokio::test]
async fn a_crash_inside_the_alter_leaves_the_old_version() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::spawn_with(
        dir.path(),
        None,
        &[("SLUICE_FAIL_POINT", "catalog.evolve_before_commit")],
    );
    let client = server.client().await;
    client
        .batch_execute("CREATE STREAM s (a INT); INSERT INTO s VALUES (1), (2)")
        .await
        .unwrap();
    assert!(client
        .batch_execute("ALTER STREAM s ADD COLUMN b TEXT DEFAULT 'x'")
        .await
        .is_err());
    server.wait_exit(Duration::from_secs(10));
    let server = Server::start_in(dir.path());
    let client = server.client().await;
    assert_eq!(
        scalar(&client, "SELECT CAST(sum(a) AS BIGINT) FROM s").await,
        3
    );
    assert_eq!(
        scalar(
            &client,
            "SELECT count(*) FROM sluice.schemas WHERE stream = 's'"
        )
        .await,
        1
    );
    client
        .batch_execute("ALTER STREAM s ADD COLUMN b TEXT DEFAULT 'x'")
        .await
        .unwrap();
    let b: Vec<String> = client
        .query("SELECT b FROM s", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(b, ["x", "x"]);
}
