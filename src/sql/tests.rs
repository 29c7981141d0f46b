//! Unit tests of the front parser (a `#[cfg(test)]` module of `sql`).

use std::time::Duration;

use super::*;
use crate::types::SqlType;

fn create(sql: &str) -> CreateStream {
    match parse(sql).unwrap() {
        Parsed::CreateStream(c) => c,
        other => panic!("{other:?}"),
    }
}

#[test]
fn create_stream_with_options() {
    let c = create(
        "CREATE STREAM IF NOT EXISTS Clicks (event_time TIMESTAMP NOT NULL, user_id BIGINT, email TEXT, \"Url\" VARCHAR(200), status INT) \
         WITH (shards = 4, partition_key = 'user_id', retention = '7 days', event_time = 'event_time')",
    );
    assert_eq!(c.name, "clicks");
    assert!(c.if_not_exists);
    assert_eq!(c.shards, 4);
    assert_eq!(c.partition_key.as_deref(), Some("user_id"));
    assert_eq!(
        c.retention.as_ref().unwrap().1,
        Duration::from_secs(7 * 86400)
    );
    assert_eq!(c.columns[3].name, "Url");
    assert_eq!(c.columns[0].sql_type, SqlType::Timestamp);
    assert!(!c.columns[0].nullable && c.columns[1].nullable);
}

#[test]
fn bad_options_get_precise_errors() {
    let err = |sql: &str| parse(sql).unwrap_err();
    let e = err("CREATE STREAM s (a INT) WITH (shard = 2)");
    assert_eq!(e.sqlstate(), "42601");
    assert!(e.to_string().contains("valid options: shards"), "{e}");
    assert_eq!(
        err("CREATE STREAM s (a INT) WITH (shards = 0)").sqlstate(),
        "22023"
    );
    assert_eq!(
        err("CREATE STREAM s (a INT) WITH (shards = 100000)").sqlstate(),
        "22023"
    );
    assert_eq!(
        err("CREATE STREAM s (a INT) WITH (partition_key = 'b')").sqlstate(),
        "42703"
    );
    assert_eq!(
        err("CREATE STREAM s (a INT) WITH (retention = 'soon')").sqlstate(),
        "22023"
    );
    assert_eq!(
        err("CREATE STREAM s (a INT) WITH (event_time = 'a')").sqlstate(),
        "42804"
    );
    assert_eq!(err("CREATE STREAM s (a INT, a TEXT)").sqlstate(), "42601");
    assert_eq!(err("CREATE STREAM s (a INTERVAL)").sqlstate(), "0A000");
    assert_eq!(err("CREATE STREAM s (a INT").sqlstate(), "42601");
}

#[test]
fn drop_and_show_and_passthrough() {
    assert_eq!(
        parse("drop stream if exists a, public.b cascade").unwrap(),
        Parsed::DropStream(DropStream {
            names: vec!["a".into(), "b".into()],
            if_exists: true,
            cascade: true
        })
    );
    assert_eq!(parse("show streams").unwrap(), Parsed::ShowStreams);
    assert_eq!(
        parse("SELECT a FROM t").unwrap(),
        Parsed::Sql("SELECT a FROM t".into())
    );
    // PostgreSQL's column names and literal types (sql::pg_names).
    assert_eq!(
        parse("SELECT 1").unwrap(),
        Parsed::Sql("SELECT CAST(1 AS INTEGER) AS \"?column?\"".into())
    );
}

#[test]
fn derived_streams_parse_with_start_option() {
    let Parsed::CreateDerived(d) = parse(
        "CREATE STREAM clean WITH (start = 'latest') AS SELECT a, lower(b) AS b FROM raw WHERE a > 1",
    )
    .unwrap() else {
        panic!()
    };
    assert_eq!(d.name, "clean");
    assert!(!d.from_earliest);
    assert_eq!(d.select, "SELECT a, lower(b) AS b FROM raw WHERE a > 1");
    let Parsed::CreateDerived(d) =
        parse("create stream c as select * except (email) from raw").unwrap()
    else {
        panic!()
    };
    assert!(d.from_earliest);
    assert!(matches!(
        parse("EXPLAIN CREATE STREAM c AS SELECT 1 FROM raw").unwrap(),
        Parsed::ExplainCreateDerived(_)
    ));
    let Parsed::CreateDerived(d) =
        parse("CREATE STREAM c WITH (shards = 2, partition_key = 'a') AS SELECT * FROM raw")
            .unwrap()
    else {
        panic!()
    };
    assert_eq!((d.shards, d.partition_key.as_deref()), (Some(2), Some("a")));
    assert_eq!(
        parse("CREATE STREAM c WITH (shards = 0) AS SELECT * FROM raw")
            .unwrap_err()
            .sqlstate(),
        "22023"
    );
    assert_eq!(
        parse("CREATE STREAM c WITH (start = 'soon') AS SELECT * FROM raw")
            .unwrap_err()
            .sqlstate(),
        "22023"
    );
    assert_eq!(parse("SHOW PIPELINES").unwrap(), Parsed::ShowPipelines);
}
