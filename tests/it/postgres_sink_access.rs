//! Reaching a PostgreSQL target safely: the password from a file (read
//! at each connection, never logged) under SCRAM authentication, and TLS
//! that always verifies the server's certificate.

use std::time::Duration;

use crate::harness::{sqlstate, wait_for, Server};
use crate::postgres::Postgres;
use crate::postgres_sink::{clicks_with, target_values, with_target, TARGET};
use crate::sinks::assert_exactly_once;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_password_comes_from_a_file_and_a_wrong_one_is_shown() {
    let tmp = tempfile::tempdir().unwrap();
    let pg = Postgres::start(tmp.path());
    let admin = pg.client().await;
    admin
        .batch_execute(&format!(
            "{TARGET};
             CREATE ROLE etl LOGIN PASSWORD 'right horse';
             GRANT INSERT ON clicks_pg TO etl;
             GRANT USAGE ON SEQUENCE clicks_pg_id_seq TO etl;
             GRANT CREATE ON SCHEMA public TO etl;"
        ))
        .await
        .unwrap();
    // etl must give a password over TCP; everyone else stays trusted.
    let hba: String = admin.query_one("SHOW hba_file", &[]).await.unwrap().get(0);
    let rules = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(
        &hba,
        format!("host all etl 127.0.0.1/32 scram-sha-256\n{rules}"),
    )
    .unwrap();
    admin
        .batch_execute("SELECT pg_reload_conf()")
        .await
        .unwrap();

    let data = tmp.path().join("data");
    std::fs::create_dir_all(data.join("secrets")).unwrap();
    std::fs::write(data.join("secrets/etl.pw"), "wrong horse\n").unwrap();
    let server = Server::start_in(&data);
    let client = server.client().await;
    clicks_with(&client, 100).await;
    let url = format!("postgresql://etl@127.0.0.1:{}/postgres", pg.port);
    let create = format!(
        "CREATE SINK pg FROM clicks WITH (location = '{url}', table = 'clicks_pg', password_file = 'secrets/etl.pw', batch_interval = '100 ms')"
    );
    let e = client
        .batch_execute(&format!(
            "{}, validate = true)",
            create.trim_end_matches(')')
        ))
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "08001");
    assert!(
        e.as_db_error()
            .unwrap()
            .message()
            .contains("password authentication failed"),
        "{e:?}"
    );
    client.batch_execute(&create).await.unwrap();
    wait_for(
        "the wrong password to show",
        Duration::from_secs(20),
        async || {
            client
                .query_one("SELECT last_error FROM sluice.sinks WHERE name = 'pg'", &[])
                .await
                .unwrap()
                .get::<_, Option<&str>>(0)
                .is_some_and(|e| e.contains("password authentication failed"))
        },
    )
    .await;
    // The file is read at each connection: fixing it is enough.
    std::fs::write(data.join("secrets/etl.pw"), "right horse\n").unwrap();
    client.batch_execute("FLUSH SINK pg").await.ok();
    wait_for(
        "delivery with the right password",
        Duration::from_secs(30),
        async || client.batch_execute("FLUSH SINK pg").await.is_ok(),
    )
    .await;
    assert_exactly_once(target_values(&pg).await, 0..100);
    let log = std::fs::read_to_string(data.with_extension("log")).unwrap();
    assert!(!log.contains("right horse"), "the password is never logged");
    // The sink reads secrets/, but no table can: not the file, not the
    // directory, not the data directory that holds it.
    for location in ["secrets/etl.pw", "secrets", "secrets/", "."] {
        let e = client
            .batch_execute(&format!(
                "CREATE EXTERNAL TABLE pw (line TEXT) STORED AS CSV LOCATION '{location}'"
            ))
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&e), "42501", "{location}: {e:?}");
    }
}

/// `sslmode=verify-full` with `sslrootcert`: the rows travel over TLS (the
/// target's `pg_stat_ssl` says so) to a server whose certificate chains to
/// that CA; without the CA (the system's roots only) the certificate is
/// refused and the sink shows why. A root certificate outside the places
/// SQL may read is refused at CREATE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_the_target_is_verified() {
    let tmp = tempfile::tempdir().unwrap();
    let certs = tmp.path().join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    crate::tls::make_certificates(&certs);
    let mut pg = with_target(tmp.path()).await;
    pg.enable_ssl(&certs);
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::copy(certs.join("ca.pem"), data.join("ca.pem")).unwrap();
    let server = Server::start_in(&data);
    let client = server.client().await;
    clicks_with(&client, 100).await;
    let base = format!("postgresql://postgres@localhost:{}/postgres", pg.port);
    client
        .batch_execute(&format!(
            "CREATE SINK pg FROM clicks WITH (location = '{base}?sslmode=verify-full&sslrootcert=ca.pem', \
             table = 'clicks_pg', batch_interval = '100 ms'); FLUSH SINK pg"
        ))
        .await
        .unwrap();
    assert_exactly_once(target_values(&pg).await, 0..100);
    let encrypted = pg
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.application_name = 'sluice sink pg' AND s.ssl",
            &[],
        )
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert!(encrypted >= 1, "the sink's connections use TLS");

    let e = client
        .batch_execute(&format!(
            "CREATE SINK strange FROM clicks WITH (location = '{base}?sslmode=require', table = 'clicks_pg', validate = true)"
        ))
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "08001");
    let message = e.as_db_error().unwrap().message().to_string();
    assert!(message.contains("certificate"), "{message}");
    let e = client
        .batch_execute(&format!(
            "CREATE SINK outside FROM clicks WITH (location = '{base}?sslmode=require&sslrootcert=/etc/ssl/certs/ca-certificates.crt', table = 'clicks_pg')"
        ))
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501");
}
