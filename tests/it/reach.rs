//! SQL cannot reach the server's files or break other sessions: each
//! attack that used to work gets 42501 and changes nothing.

use crate::harness::{scalar, sqlstate, Server};

#[tokio::test]
async fn sql_cannot_read_or_write_files_outside_the_allowed_locations() {
    let server = Server::start();
    let client = server.client().await;
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("secret.txt");
    std::fs::write(&secret, "top secret\n").unwrap();
    let attacks = [
        "CREATE EXTERNAL TABLE pw (line TEXT) STORED AS CSV LOCATION '/etc/passwd'".to_string(),
        "CREATE EXTERNAL TABLE up (line TEXT) STORED AS CSV LOCATION '../../secret.txt'".into(),
        format!(
            "CREATE EXTERNAL TABLE s (line TEXT) STORED AS CSV LOCATION 'file://{}'",
            secret.display()
        ),
        format!(
            "CREATE UNBOUNDED EXTERNAL TABLE w (line TEXT) STORED AS CSV LOCATION '{}'",
            secret.display()
        ),
        format!(
            "EXPLAIN ANALYZE COPY (SELECT 'x') TO '{}/written.csv'",
            outside.path().display()
        ),
        format!(
            "CREATE TABLE t LOCATION '{}/ctas' AS SELECT 1 AS n",
            outside.path().display()
        ),
        "CREATE TABLE t2 LOCATION '../escape' AS SELECT 1 AS n".into(),
    ];
    for attack in &attacks {
        let Err(err) = client.batch_execute(attack).await else {
            panic!("{attack} succeeded");
        };
        assert_eq!(sqlstate(&err), "42501", "{attack}: {err:?}");
    }
    assert_eq!(
        std::fs::read_dir(outside.path()).unwrap().count(),
        1,
        "nothing was written outside"
    );
    assert_eq!(
        scalar(
            &client,
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        )
        .await,
        0
    );
}

#[tokio::test]
async fn tables_over_files_are_read_only_to_sql() {
    let server = Server::start();
    let client = server.client().await;
    std::fs::create_dir_all(server.data_dir().join("ext")).unwrap();
    std::fs::write(server.data_dir().join("ext/a.csv"), "n\n1\n").unwrap();
    client
        .batch_execute(
            "CREATE EXTERNAL TABLE e (n BIGINT) STORED AS CSV LOCATION 'ext/' OPTIONS ('format.has_header' 'true'); \
             CREATE TABLE c AS SELECT 1::BIGINT AS n",
        )
        .await
        .unwrap();
    for insert in [
        "INSERT INTO e VALUES (2)",
        "INSERT INTO c VALUES (2)",
        "INSERT INTO e SELECT n FROM c",
        "EXPLAIN ANALYZE INSERT INTO e VALUES (3)",
    ] {
        let err = client.batch_execute(insert).await.unwrap_err();
        assert_eq!(sqlstate(&err), "42501", "{insert}: {err:?}");
    }
    assert_eq!(scalar(&client, "SELECT sum(n) FROM e").await, 1);
    assert_eq!(scalar(&client, "SELECT sum(n) FROM c").await, 1);
    assert_eq!(
        std::fs::read_dir(server.data_dir().join("ext"))
            .unwrap()
            .count(),
        1
    );
}

#[tokio::test]
async fn one_session_cannot_drop_what_every_session_shares() {
    let server = Server::start();
    let first = server.client().await;
    let second = server.client().await;
    first
        .batch_execute("CREATE STREAM s (n BIGINT); INSERT INTO s VALUES (1)")
        .await
        .unwrap();
    for attack in [
        "DROP SCHEMA public CASCADE",
        "DROP SCHEMA sluice CASCADE",
        "CREATE SCHEMA other",
        "CREATE VIEW v AS SELECT 1",
    ] {
        let err = first.batch_execute(attack).await.unwrap_err();
        assert_eq!(sqlstate(&err), "42501", "{attack}: {err:?}");
    }
    assert_eq!(scalar(&second, "SELECT count(*) FROM s").await, 1);
    assert_eq!(
        scalar(
            &second,
            "SELECT count(*) FROM sluice.streams WHERE name = 's'"
        )
        .await,
        1
    );
}
