//! `GROUP BY` one text column over delivered files runs through the
//! string-view partial aggregate: exact groups and aggregates (short,
//! long and NULL keys; few groups repeated in every batch; more groups than
//! one partial aggregate holds, so it hands its state on several times),
//! checked against the same aggregation done here row by row; and
//! `DISTINCT`, a grouping without aggregates.

use std::collections::{HashMap, HashSet};

use crate::harness::{explain, Server};

const ROWS: i64 = 200_000;
const CYCLE: i64 = 80_000;

/// Per key: count, sum, min, max of `v`.
type Expected = HashMap<Option<String>, (i64, i64, i64, i64)>;

/// 72 000 keys and NULL, each key on rows `CYCLE` apart: a partial
/// aggregate meets a key again after handing its state on.
fn high_cardinality_key(n: i64) -> Option<String> {
    let m = n % CYCLE;
    match (n % 10, m % 3) {
        (0, _) => None,
        (_, 0) => Some(format!("k{m}")),
        _ => Some(format!("a key longer than twelve bytes #{m}")),
    }
}

fn low_cardinality_key(n: i64) -> Option<String> {
    match (n % 11, n % 3) {
        (0, _) => None,
        (_, 0) => Some(format!("g{}", n % 50)),
        _ => Some(format!("a group name longer than twelve #{}", n % 50)),
    }
}

fn expected(key: fn(i64) -> Option<String>) -> Expected {
    let mut groups = Expected::new();
    for n in 0..ROWS {
        let v = n % 1000;
        let g = groups.entry(key(n)).or_insert((0, 0, i64::MAX, i64::MIN));
        *g = (g.0 + 1, g.1 + v, g.2.min(v), g.3.max(v));
    }
    groups
}

async fn grouped(client: &tokio_postgres::Client, column: &str) -> Expected {
    let sql = format!(
        "SELECT {column}, count(*), sum(v), min(v), max(v), avg(v) FROM ev_lake GROUP BY {column}"
    );
    let plan = explain(client, &format!("EXPLAIN {sql}")).await;
    assert!(plan.contains("StringGroupAggregateExec"), "{plan}");
    let mut got = Expected::new();
    for row in client.query(&sql, &[]).await.unwrap() {
        let (count, sum): (i64, i64) = (row.get(1), row.get(2));
        let (min, max): (i32, i32) = (row.get(3), row.get(4));
        let avg: f64 = row.get(5);
        assert!((avg - sum as f64 / count as f64).abs() < 1e-9, "avg {avg}");
        let previous = got.insert(row.get(0), (count, sum, min.into(), max.into()));
        assert!(previous.is_none(), "one row per group");
    }
    got
}

#[tokio::test]
async fn text_group_by_over_files_is_exact() {
    let server = Server::start();
    let client = server.client().await;
    client
        .batch_execute(&format!(
            "CREATE STREAM ev (event_time TIMESTAMP NOT NULL, n BIGINT NOT NULL, k TEXT, g TEXT, v INT) \
               WITH (shards = 2, partition_key = 'n', event_time = 'event_time'); \
             CREATE SINK ev_lake FROM ev WITH (location = 'lake/ev', time_partition = 'day'); \
             INSERT INTO ev SELECT CAST('2026-11-25 10:00:00' AS TIMESTAMP), n, \
               CASE WHEN n % 10 = 0 THEN NULL WHEN n % {CYCLE} % 3 = 0 THEN 'k' || (n % {CYCLE}) \
                    ELSE 'a key longer than twelve bytes #' || (n % {CYCLE}) END, \
               CASE WHEN n % 11 = 0 THEN NULL WHEN n % 3 = 0 THEN 'g' || (n % 50) \
                    ELSE 'a group name longer than twelve #' || (n % 50) END, \
               CAST(n % 1000 AS INT) \
             FROM (SELECT unnest(range(0, {ROWS})) AS n); \
             FLUSH SINK ev_lake"
        ))
        .await
        .unwrap();

    let want = expected(low_cardinality_key);
    assert_eq!(want.len(), 101);
    assert_eq!(grouped(&client, "g").await, want);

    let want = expected(high_cardinality_key);
    assert_eq!(want.len(), 72_001);
    assert_eq!(grouped(&client, "k").await, want);

    // DISTINCT is a GROUP BY without aggregates: group values only.
    let sql = "SELECT DISTINCT k FROM ev_lake";
    assert!(explain(&client, &format!("EXPLAIN {sql}"))
        .await
        .contains("StringGroupAggregateExec"));
    let rows = client.query(sql, &[]).await.unwrap();
    let distinct: HashSet<Option<String>> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(rows.len(), distinct.len(), "each value once");
    assert_eq!(distinct, want.into_keys().collect::<HashSet<_>>());
}
