//! The real `psql` binary: command tags and meta-commands.

use crate::harness::Server;

#[test]
fn psql_sees_tags_tables_and_columns() {
    let server = Server::start();
    let (out, err, ok) = server.psql(
        "CREATE STREAM clicks (event_time TIMESTAMP NOT NULL, user_id BIGINT, email TEXT, url TEXT, status INT) \
           WITH (shards = 4, partition_key = 'user_id');\n\
         INSERT INTO clicks VALUES ('2026-11-25 13:00:01', 7, 'a@x.io', '/home', 200), ('2026-11-25 13:00:02', 8, NULL, '/buy', 500);\n\
         SELECT url, count(*) FROM clicks WHERE status = 200 GROUP BY url;\n\
         \\dt\n\
         \\d clicks\n\
         \\d+ clicks\n\
         \\l\n\
         \\dn\n\
         SHOW STREAMS;\n\
         DROP STREAM clicks;\n",
    );
    assert!(ok, "psql failed: {err}");
    assert!(err.is_empty(), "unexpected errors: {err}");
    assert!(out.contains("CREATE STREAM"), "{out}");
    assert!(out.contains("INSERT 0 2"), "{out}");
    // PostgreSQL names the column `count`.
    assert!(
        out.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["url", "|", "count"]),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["/home", "|", "1"]),
        "{out}"
    );
    assert!(out.contains("(1 row)"), "{out}");
    // \dt lists the stream as a table in schema public.
    let squeezed: Vec<String> = out
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert!(
        squeezed
            .iter()
            .any(|l| l.starts_with("public | clicks | table")),
        "{out}"
    );
    // \d shows columns, Postgres type names and NOT NULL.
    assert!(out.contains("Table \"public.clicks\""), "{out}");
    assert!(
        out.lines().any(|l| l.contains("event_time")
            && l.contains("timestamp without time zone")
            && l.contains("not null")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.contains("user_id") && l.contains("bigint")),
        "{out}"
    );
    // \l lists the database, \dn the schemas.
    assert!(
        out.lines().any(|l| l.trim_start().starts_with("sluice ")),
        "{out}"
    );
    assert!(
        out.lines().any(|l| l.trim() == "sluice | postgres"),
        "{out}"
    );
    // \d+ adds storage details.
    assert!(
        out.lines()
            .any(|l| l.contains("Storage") && l.contains("Description")),
        "{out}"
    );
    assert!(out.contains("DROP STREAM"), "{out}");
}

#[test]
fn psql_reports_errors_with_codes_and_notices() {
    let server = Server::start();
    let (_out, err, _) = server.psql(
        "\\set VERBOSITY verbose\n\
         CREATE STREAM s (a INT);\n\
         CREATE STREAM s (a INT);\n\
         CREATE STREAM IF NOT EXISTS s (a INT);\n\
         INSERT INTO s VALUES ('x');\n\
         SELECT * FROM t;\n",
    );
    assert!(
        err.contains("ERROR:  42P07: relation \"s\" already exists"),
        "{err}"
    );
    assert!(
        err.contains("NOTICE:  00000: relation \"s\" already exists, skipping"),
        "{err}"
    );
    assert!(
        err.contains("ERROR:  22P02: invalid input syntax for type integer: \"x\""),
        "{err}"
    );
    assert!(
        err.contains("ERROR:  42P01: relation \"t\" does not exist"),
        "{err}"
    );
}

/// `\du` lists the superuser, the group roles and each login role with
/// its group; `\du name` just that one.
#[test]
fn psql_du_lists_roles_and_their_groups() {
    let server = Server::start();
    let (out, err, ok) = server.psql(
        "CREATE ROLE ria LOGIN PASSWORD 'not-shown' IN ROLE sluice_reader;\n\
         \\du\n\
         \\du ria\n",
    );
    assert!(ok, "{err}");
    let row = |name: &str| {
        out.lines()
            .filter(|l| l.split('|').next().is_some_and(|c| c.trim() == name))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let ria = row("ria");
    assert_eq!(ria.len(), 2, "listed by both commands: {out}");
    assert!(ria.iter().all(|l| l.contains("{sluice_reader}")), "{out}");
    assert!(row("sluice")[0].contains("Superuser"), "{out}");
    assert!(row("sluice_writer")[0].contains("Cannot login"), "{out}");
    assert!(!out.contains("not-shown"), "{out}");
    let log = std::fs::read_to_string(server.data_dir().with_extension("log")).unwrap();
    assert!(log.contains("sluice is serving"), "the log is the server's");
    assert!(
        !log.contains("not-shown"),
        "the password reached the server log"
    );
}

/// Values print as PostgreSQL 15's psql shows them: timestamps without a
/// zero fraction, floats with signed two-digit exponents and named
/// infinities, intervals.
#[test]
fn psql_prints_timestamps_and_floats_as_postgres_does() {
    let server = Server::start();
    let (out, err, ok) = server.psql(
        "\\pset format unaligned\n\\pset tuples_only on\n\
         CREATE STREAM t (at TIMESTAMP, f DOUBLE PRECISION);\n\
         INSERT INTO t VALUES ('2026-11-25 13:00:01', 1e20), ('2026-11-25 13:00:01.5', 1e-7);\n\
         SELECT at, f FROM t ORDER BY at;\n\
         SELECT CAST('Infinity' AS DOUBLE PRECISION), TIMESTAMPTZ '2026-01-01 00:00:00+00';\n\
         SELECT INTERVAL '1 day 2 hours', INTERVAL '3 months';\n",
    );
    assert!(ok && err.is_empty(), "{err}");
    let lines: Vec<&str> = out.lines().filter(|l| l.contains('|')).collect();
    assert_eq!(
        lines,
        [
            "2026-11-25 13:00:01|1e+20",
            "2026-11-25 13:00:01.5|1e-07",
            "Infinity|2026-01-01 00:00:00+00",
            "1 day 02:00:00|3 mons"
        ],
        "{out}"
    );
}
