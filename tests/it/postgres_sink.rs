//! PostgreSQL sinks against a real PostgreSQL 15 started by the test:
//! rows by binary COPY with the offsets in the same transaction, column
//! matching at CREATE, refused rows to `sluice.errors`, the database
//! restarted mid-delivery, sluice killed between COPY and commit, and the
//! password from a file.

use std::time::Duration;

use crate::harness::{scalar, wait_for, Server};
use crate::postgres::Postgres;
use crate::sinks::{assert_exactly_once, insert_range, CLICKS};

/// The target: the stream's columns (status wider than the stream's int,
/// event_time with a time zone), one more with a default, one nullable.
pub const TARGET: &str = "CREATE TABLE clicks_pg (
    id bigserial PRIMARY KEY,
    event_time timestamptz NOT NULL,
    n bigint NOT NULL,
    url varchar(8),
    status bigint,
    loaded_at timestamptz NOT NULL DEFAULT now(),
    note text)";

/// A PostgreSQL in `dir` holding the empty target table.
pub async fn with_target(dir: &std::path::Path) -> Postgres {
    let pg = Postgres::start(dir);
    pg.client().await.batch_execute(TARGET).await.unwrap();
    pg
}

/// Creates stream `clicks` holding rows `[0, rows)`.
pub async fn clicks_with(client: &tokio_postgres::Client, rows: i64) {
    client.batch_execute(CLICKS).await.unwrap();
    client
        .batch_execute(&insert_range("clicks", 0, rows))
        .await
        .unwrap();
}

pub async fn target_values(pg: &Postgres) -> Vec<i64> {
    let rows = pg
        .client()
        .await
        .query("SELECT n FROM clicks_pg ORDER BY n", &[])
        .await
        .unwrap();
    rows.iter().map(|r| r.get(0)).collect()
}

fn sink_sql(pg: &Postgres, extra: &str) -> String {
    format!(
        "CREATE SINK pg FROM clicks WITH (location = '{}', table = 'clicks_pg', batch_interval = '100 ms'{extra})",
        pg.url()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_arrive_once_with_their_types_and_refused_rows_become_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let pg = with_target(tmp.path()).await;
    let server = Server::start();
    let client = server.client().await;
    clicks_with(&client, 1000).await;
    client.batch_execute(&sink_sql(&pg, "")).await.unwrap();
    // One URL longer than the target's varchar(8): that row is refused,
    // the others of its batch are delivered.
    client
        .batch_execute(
            "INSERT INTO clicks VALUES ('2026-11-25 12:00:00', 1000, '/far/too/long', 200), \
                                       ('2026-11-25 12:00:01', 1001, '/ok', 500)",
        )
        .await
        .unwrap();
    client.batch_execute("FLUSH SINK pg").await.unwrap();

    let mut want: Vec<i64> = (0..1000).collect();
    want.push(1001);
    assert_eq!(target_values(&pg).await, want);
    let target = pg.client().await;
    let row = target
        .query_one(
            "SELECT event_time = '2026-11-25 10:05:00+00'::timestamptz, url, status, loaded_at IS NOT NULL, note
             FROM clicks_pg WHERE n = 5",
            &[],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0), "event times arrive as UTC instants");
    assert_eq!(row.get::<_, &str>(1), "/p5");
    assert_eq!(row.get::<_, Option<i64>>(2), None, "5 % 3 = 2: NULL status");
    assert!(
        row.get::<_, bool>(3),
        "the target's default fills its column"
    );
    assert_eq!(row.get::<_, Option<&str>>(4), None);
    assert_eq!(
        scalar(&target, "SELECT count(*) FROM clicks_pg WHERE status = 404").await,
        (0..1000).filter(|n| n % 3 == 1).count() as i64
    );
    // The offsets live beside the table: one row per source shard, ending
    // where the stream ends.
    assert_eq!(
        scalar(
            &target,
            "SELECT sum(next_offset)::bigint FROM sluice_sink_offsets WHERE sink LIKE 'pg@%'"
        )
        .await,
        1002
    );
    let refused = client
        .query_one(
            "SELECT raw, error_message FROM sluice.errors WHERE stage = 'delivery' AND pipeline = 'pg'",
            &[],
        )
        .await
        .unwrap();
    assert!(refused.get::<_, &str>(0).contains("/far/too/long"));
    assert!(
        refused.get::<_, &str>(1).contains("22001"),
        "{}",
        refused.get::<_, &str>(1)
    );
    let row = client
        .query_one(
            "SELECT format, location, lag_records, last_error FROM sluice.sinks WHERE name = 'pg'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, &str>(0), "postgresql");
    assert_eq!(row.get::<_, &str>(1), pg.url());
    assert_eq!(row.get::<_, i64>(2), 0);
    assert_eq!(row.get::<_, Option<&str>>(3), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_that_cannot_hold_the_stream_is_refused_at_create() {
    let tmp = tempfile::tempdir().unwrap();
    let pg = Postgres::start(tmp.path());
    pg.client()
        .await
        .batch_execute(
            "CREATE TABLE wrong_type (event_time timestamp, n bigint, url text, status text);
             CREATE TABLE narrow (event_time timestamp, n integer, url text, status integer);
             CREATE TABLE missing (event_time timestamp, n bigint, url text);
             CREATE TABLE strict (event_time timestamp, n bigint, url text, status integer, region text NOT NULL);",
        )
        .await
        .unwrap();
    let server = Server::start();
    let client = server.client().await;
    client.batch_execute(CLICKS).await.unwrap();
    let create = |table: &str, extra: &str| {
        format!(
            "CREATE SINK s FROM clicks WITH (location = '{}', table = '{table}'{extra})",
            pg.url()
        )
    };
    let refused = async |sql: String| {
        let e = client.batch_execute(&sql).await.unwrap_err();
        let db = e.as_db_error().unwrap();
        (db.code().code().to_string(), db.message().to_string())
    };
    let (code, message) = refused(create("wrong_type", "")).await;
    assert_eq!(code, "42804");
    assert!(
        message.contains("\"status\" is integer") && message.contains("but text"),
        "{message}"
    );
    let (code, message) = refused(create("narrow", "")).await;
    assert_eq!(
        code, "42804",
        "bigint into integer would lose values: {message}"
    );
    let (code, message) = refused(create("missing", "")).await;
    assert_eq!(code, "42703");
    assert!(message.contains("\"status\""), "{message}");
    let (code, message) = refused(create("strict", "")).await;
    assert_eq!(code, "23502");
    assert!(message.contains("\"region\""), "{message}");
    let (code, _) = refused(create("nowhere", "")).await;
    assert_eq!(code, "42P01");
    // The password never comes from SQL text.
    let (code, message) = refused(format!(
        "CREATE SINK s FROM clicks WITH (location = 'postgresql://postgres:secret@127.0.0.1:{}/postgres', table = 'missing')",
        pg.port
    ))
    .await;
    assert_eq!(code, "22023");
    assert!(message.contains("password_env"), "{message}");
    let (code, _) = refused(create(
        "missing",
        ", password_env = 'AWS_SECRET_ACCESS_KEY'",
    ))
    .await;
    assert_eq!(code, "42501");
    let (code, _) = refused(create("missing", ", password_file = '/etc/shadow'")).await;
    assert_eq!(code, "42501");
    let (code, _) = refused(create("", "")).await;
    assert_eq!(code, "22023");
    assert!(server.psql("SELECT 1").2);

    // Nobody listening: with validate = true the statement fails (08001);
    // without, the sink exists and shows why it cannot deliver.
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let nowhere = format!("postgresql://postgres@127.0.0.1:{closed_port}/postgres");
    let (code, message) = refused(format!(
        "CREATE SINK s FROM clicks WITH (location = '{nowhere}', table = 't', validate = true)"
    ))
    .await;
    assert_eq!(code, "08001");
    assert!(message.contains("could not connect"), "{message}");
    client
        .batch_execute(&format!(
            "CREATE SINK later FROM clicks WITH (location = '{nowhere}', table = 't')"
        ))
        .await
        .unwrap();
    wait_for(
        "the sink to show its error",
        Duration::from_secs(20),
        async || {
            let row = client
                .query_one(
                    "SELECT state, last_error FROM sluice.sinks WHERE name = 'later'",
                    &[],
                )
                .await
                .unwrap();
            row.get::<_, &str>(0) == "retrying"
                && row
                    .get::<_, Option<&str>>(1)
                    .is_some_and(|e| e.contains("could not connect"))
        },
    )
    .await;
}

/// Writes `[from, to)` in statements of 50 rows, one after another.
async fn insert_in_steps(client: &tokio_postgres::Client, from: i64, to: i64) {
    let mut at = from;
    while at < to {
        let end = (at + 50).min(to);
        client
            .batch_execute(&insert_range("clicks", at, end))
            .await
            .unwrap();
        at = end;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_of_the_database_mid_delivery_loses_and_repeats_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let mut pg = with_target(tmp.path()).await;
    let server = Server::start();
    let client = server.client().await;
    client.batch_execute(CLICKS).await.unwrap();
    client.batch_execute(&sink_sql(&pg, "")).await.unwrap();
    insert_in_steps(&client, 0, 1000).await;
    pg.stop();
    // Records keep coming while the database is down; the sink waits.
    insert_in_steps(&client, 1000, 2000).await;
    wait_for(
        "the sink to show the outage",
        Duration::from_secs(20),
        async || {
            let row = client
                .query_one(
                    "SELECT state, last_error FROM sluice.sinks WHERE name = 'pg'",
                    &[],
                )
                .await
                .unwrap();
            row.get::<_, &str>(0) == "retrying" && row.get::<_, Option<&str>>(1).is_some()
        },
    )
    .await;
    assert!(
        client.batch_execute("FLUSH SINK pg").await.is_err(),
        "a flush cannot finish while the target is down"
    );
    pg.resume();
    insert_in_steps(&client, 2000, 2500).await;
    client.batch_execute("FLUSH SINK pg").await.unwrap();
    assert_exactly_once(target_values(&pg).await, 0..2500);
    let row = client
        .query_one(
            "SELECT state, last_error FROM sluice.sinks WHERE name = 'pg'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, &str>(0), "running");
    assert_eq!(row.get::<_, Option<&str>>(1), None);
}

/// sluice dies at `point` of a delivery (between COPY and the target's
/// commit, or between that commit and its own catalog's); after the
/// restart every record is in the target exactly once.
async fn crash_at(point: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let pg = with_target(tmp.path()).await;
    let data = tmp.path().join("data");
    let mut server = Server::spawn_with(&data, None, &[("SLUICE_FAIL_POINT", point)]);
    {
        let client = server.client().await;
        clicks_with(&client, 1000).await;
        client.batch_execute(&sink_sql(&pg, "")).await.unwrap();
    }
    let status = server.wait_exit(Duration::from_secs(30));
    assert!(!status.success(), "the fail point {point} was not reached");
    let before = target_values(&pg).await;
    if point == "sink.postgres.before_commit" {
        assert!(before.is_empty(), "an uncommitted COPY is not visible");
    } else {
        assert!(!before.is_empty(), "the committed batch is in the target");
    }

    let server = Server::start_in(&data);
    let client = server.client().await;
    client
        .batch_execute(&insert_range("clicks", 1000, 1500))
        .await
        .unwrap();
    client.batch_execute("FLUSH SINK pg").await.unwrap();
    assert_exactly_once(target_values(&pg).await, 0..1500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_between_copy_and_commit_delivers_exactly_once() {
    crash_at("sink.postgres.before_commit").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_after_the_targets_commit_delivers_exactly_once() {
    crash_at("sink.postgres.after_commit").await;
}

/// Every type the sink encodes, read back by PostgreSQL itself: what it
/// stored equals what the stream holds (wider target types included).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_encoded_type_arrives_as_postgresql_reads_it() {
    let tmp = tempfile::tempdir().unwrap();
    let pg = Postgres::start(tmp.path());
    pg.client()
        .await
        .batch_execute(
            "CREATE TABLE typed (k int4, b bool, s int2, r float8, d float8, num numeric(14,3),
                                 raw bytea, day date, at timestamp, j jsonb, t varchar(20))",
        )
        .await
        .unwrap();
    let server = Server::start();
    let client = server.client().await;
    client
        .batch_execute(
            "CREATE STREAM typed (k INT, b BOOLEAN, s SMALLINT, r REAL, d DOUBLE PRECISION, num NUMERIC(12,3), \
                                  raw BYTEA, day DATE, at TIMESTAMP, j TEXT, t TEXT) WITH (shards = 1); \
             INSERT INTO typed VALUES \
               (1, true, -7, 1.5, -2.25, 12345.678, '\\x00ff10', '2026-02-28', '1999-12-31 23:59:59.123456', '{\"a\": [1, 2]}', 'héllo'), \
               (2, false, 32767, -0.5, 1e300, -0.005, '\\x', '1970-01-01', '2000-01-01 00:00:00', '[]', ''), \
               (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL), \
               (4, true, 0, 0, 0, 0, '\\x41', '2100-12-31', '2038-01-19 03:14:08', '{}', 'x')",
        )
        .await
        .unwrap();
    client
        .batch_execute(&format!(
            "CREATE SINK pg FROM typed WITH (location = '{}', table = 'typed'); FLUSH SINK pg",
            pg.url()
        ))
        .await
        .unwrap();
    let text_of =
        "SELECT k::text, b::text, s::text, r::text, d::text, num::text, encode(raw, 'hex'), \
                   day::text, at::text, j::text, t FROM typed ORDER BY k";
    let rows = pg.client().await.query(text_of, &[]).await.unwrap();
    let got: Vec<Vec<Option<String>>> = rows
        .iter()
        .map(|r| (0..11).map(|i| r.get::<_, Option<String>>(i)).collect())
        .collect();
    let row = |v: &[Option<&str>]| v.iter().map(|s| s.map(str::to_string)).collect::<Vec<_>>();
    assert_eq!(
        got,
        vec![
            row(&[
                Some("1"),
                Some("true"),
                Some("-7"),
                Some("1.5"),
                Some("-2.25"),
                Some("12345.678"),
                Some("00ff10"),
                Some("2026-02-28"),
                Some("1999-12-31 23:59:59.123456"),
                Some("{\"a\": [1, 2]}"),
                Some("héllo")
            ]),
            row(&[
                Some("2"),
                Some("false"),
                Some("32767"),
                Some("-0.5"),
                Some("1e+300"),
                Some("-0.005"),
                Some(""),
                Some("1970-01-01"),
                Some("2000-01-01 00:00:00"),
                Some("[]"),
                Some("")
            ]),
            row(&[
                Some("3"),
                None,
                None,
                None,
                None,
                None,
                None,
                None,
                None,
                None,
                None
            ]),
            row(&[
                Some("4"),
                Some("true"),
                Some("0"),
                Some("0"),
                Some("0"),
                Some("0.000"),
                Some("41"),
                Some("2100-12-31"),
                Some("2038-01-19 03:14:08"),
                Some("{}"),
                Some("x")
            ]),
        ]
    );
}
