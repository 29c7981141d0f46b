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

/// A `_delta_log` written by anyone who can write under an allowed
/// location names files outside the table (`file://`, an absolute path,
/// `..`, percent-encoded `..`): the table is refused with 42501 when it is
/// created, and a later commit that does so fails the query, never
/// returning the outside file's rows.
#[tokio::test]
async fn delta_logs_cannot_name_files_outside_their_table() {
    let server = Server::start();
    let client = server.client().await;
    let clean = server.data_dir().join("sales");
    crate::delta::delta_py(&["write", clean.to_string_lossy().as_ref()], &[]);
    let outside = tempfile::tempdir().unwrap();
    let any_file = std::fs::read_dir(clean.join("region=eu"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let secret = outside.path().join("secret.parquet");
    std::fs::copy(any_file, &secret).unwrap();
    let depth = server.data_dir().components().count();
    let up = "../".repeat(depth + 1);
    let relative_secret = secret.to_string_lossy().trim_start_matches('/').to_string();
    let attacks = [
        format!("file://{}", secret.display()),
        secret.to_string_lossy().into_owned(),
        format!("{up}{relative_secret}"),
        format!("{}{relative_secret}", "%2E%2E/".repeat(depth + 1)),
    ];
    let with_add_path = |log: &str, path: &str| -> String {
        log.lines()
            .map(|line| {
                let mut action: serde_json::Value = serde_json::from_str(line).unwrap();
                if let Some(add) = action.get_mut("add") {
                    add["path"] = serde_json::Value::String(path.to_string());
                }
                action.to_string() + "\n"
            })
            .collect()
    };
    let commit =
        |dir: &std::path::Path, version: u32| dir.join(format!("_delta_log/{version:020}.json"));
    for (i, attack) in attacks.iter().enumerate() {
        let dir = server.data_dir().join(format!("evil{i}"));
        let copied = std::process::Command::new("cp")
            .args(["-r", &clean.to_string_lossy(), &dir.to_string_lossy()])
            .status()
            .unwrap();
        assert!(copied.success());
        let log = std::fs::read_to_string(commit(&dir, 1)).unwrap();
        std::fs::write(commit(&dir, 1), with_add_path(&log, attack)).unwrap();
        let err = client
            .batch_execute(&format!(
                "CREATE EXTERNAL TABLE evil{i} STORED AS DELTA LOCATION 'evil{i}'"
            ))
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&err), "42501", "{attack}: {err:?}");
        let message = err.as_db_error().map(|e| e.message().to_string());
        assert!(
            message.is_some_and(|m| m.contains("not under the table's directory")),
            "{err:?}"
        );
    }
    // A table created clean whose log later names an outside file.
    client
        .batch_execute("CREATE EXTERNAL TABLE sales STORED AS DELTA LOCATION 'sales'")
        .await
        .unwrap();
    assert_eq!(scalar(&client, "SELECT count(*) FROM sales").await, 5);
    let log = std::fs::read_to_string(commit(&clean, 1)).unwrap();
    std::fs::write(commit(&clean, 2), with_add_path(&log, &attacks[1])).unwrap();
    let err = client
        .query_one("SELECT count(*) FROM sales", &[])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42501", "{err:?}");
}
