//! Every statement kind the query engine takes, in several spellings,
//! needs the same group; refusals hold inside EXPLAIN, PREPARE and CTEs.

use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

use super::{plan_need, statement_need};
use crate::catalog::RoleGroup;

fn parsed(sql: &str) -> datafusion::sql::sqlparser::ast::Statement {
    let mut statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).expect(sql);
    assert_eq!(statements.len(), 1, "{sql}");
    statements.remove(0)
}

/// The group `sql` needs, or the SQLSTATE that refuses it for everyone.
fn group(sql: &str) -> Result<RoleGroup, &'static str> {
    statement_need(&parsed(sql))
        .map(|need| need.group)
        .map_err(|e| e.sqlstate())
}

#[test]
fn statement_kinds_need_their_group_whatever_the_spelling() {
    use RoleGroup::*;
    let cases: &[(&str, Result<RoleGroup, &str>)] = &[
        ("SELECT 1", Ok(Reader)),
        ("select/**/1", Ok(Reader)),
        ("(SELECT 1) UNION ALL (SELECT 2)", Ok(Reader)),
        ("WITH w AS (SELECT 1) SELECT * FROM w", Ok(Reader)),
        ("VALUES (1), (2)", Ok(Reader)),
        ("EXPLAIN SELECT 1", Ok(Reader)),
        ("SHOW ALL", Ok(Reader)),
        ("SHOW statement_timeout", Ok(Reader)),
        ("SET statement_timeout = 5", Ok(Reader)),
        ("SET TIME ZONE 'UTC'", Ok(Reader)),
        ("RESET ALL", Ok(Reader)),
        ("BEGIN", Ok(Reader)),
        ("COMMIT", Ok(Reader)),
        ("ROLLBACK", Ok(Reader)),
        ("DECLARE c CURSOR FOR SELECT 1", Ok(Reader)),
        ("FETCH 1 FROM c", Ok(Reader)),
        ("CLOSE c", Ok(Reader)),
        ("PREPARE p AS SELECT 1", Ok(Reader)),
        ("EXECUTE p", Ok(Reader)),
        ("DEALLOCATE p", Ok(Reader)),
        ("INSERT INTO t SELECT * FROM t", Ok(Writer)),
        ("insert/**/into t values (1)", Ok(Writer)),
        ("EXPLAIN ANALYZE INSERT INTO t SELECT 1", Ok(Writer)),
        ("EXPLAIN VERBOSE INSERT INTO t SELECT 1", Ok(Writer)),
        ("PREPARE p AS INSERT INTO t VALUES ($1)", Ok(Writer)),
        (
            "WITH w AS (SELECT 1) INSERT INTO t SELECT * FROM w",
            Ok(Writer),
        ),
        ("UPDATE t SET a = 1", Ok(Writer)),
        ("DELETE FROM t", Ok(Writer)),
        ("TRUNCATE t", Ok(Writer)),
        ("SET datafusion.execution.target_partitions = 64", Ok(Admin)),
        ("CREATE TABLE t (a INT)", Ok(Admin)),
        ("DROP TABLE t", Ok(Admin)),
        ("ALTER TABLE t ADD COLUMN b INT", Ok(Admin)),
        ("CREATE INDEX i ON t (a)", Ok(Admin)),
        ("COPY t TO '/tmp/x.csv'", Err("42501")),
        ("COPY (SELECT 'pwned' AS a) TO '/tmp/x.csv'", Err("42501")),
        ("EXPLAIN ANALYZE COPY (SELECT 1) TO '/tmp/y'", Err("42501")),
        ("COPY t FROM '/etc/passwd'", Err("42501")),
        ("PREPARE p AS COPY t TO '/tmp/x'", Err("42501")),
        ("DROP SCHEMA public CASCADE", Err("42501")),
        ("drop/**/schema public cascade", Err("42501")),
        ("CREATE SCHEMA s", Err("42501")),
        ("DROP DATABASE sluice", Err("42501")),
        ("CREATE VIEW v AS SELECT 1", Err("42501")),
        ("CREATE OR REPLACE VIEW v AS SELECT 1", Err("42501")),
        ("DROP VIEW v", Err("42501")),
        ("SELECT 1 INTO t2", Err("42501")),
        (
            "SET datafusion.runtime.temp_directory = '/tmp/anywhere'",
            Err("55P02"),
        ),
        ("SET datafusion.runtime.memory_limit = '100G'", Err("55P02")),
        ("RESET datafusion.runtime.memory_limit", Err("55P02")),
        ("SET ROLE sluice", Err("42501")),
        ("SET SESSION AUTHORIZATION sluice", Err("42501")),
    ];
    for (sql, want) in cases {
        assert_eq!(&group(sql), want, "{sql}");
    }
}

/// The plan walk finds what the tree check finds, and through the
/// nodes that wrap a plan (EXPLAIN ANALYZE, PREPARE, subqueries).
#[tokio::test]
async fn plans_need_their_group_through_wrapping_nodes() {
    use RoleGroup::*;
    let ctx = SessionContext::new();
    ctx.sql("CREATE TABLE t (a BIGINT)").await.unwrap();
    let plan = |sql: &'static str| {
        let ctx = ctx.clone();
        async move {
            let plan = ctx.state().create_logical_plan(sql).await.expect(sql);
            plan_need(&plan).map(|n| n.group).map_err(|e| e.sqlstate())
        }
    };
    assert_eq!(
        plan("SELECT * FROM t WHERE a IN (SELECT a FROM t)").await,
        Ok(Reader)
    );
    assert_eq!(plan("INSERT INTO t VALUES (1)").await, Ok(Writer));
    assert_eq!(
        plan("EXPLAIN ANALYZE INSERT INTO t SELECT a FROM t").await,
        Ok(Writer)
    );
    assert_eq!(
        plan("PREPARE p(BIGINT) AS INSERT INTO t VALUES ($1)").await,
        Ok(Writer)
    );
    assert_eq!(plan("CREATE TABLE u (b INT)").await, Ok(Admin));
    assert_eq!(
        plan("COPY (SELECT 1) TO '/tmp/never.csv'").await,
        Err("42501")
    );
    assert_eq!(
        plan("EXPLAIN ANALYZE COPY t TO '/tmp/never.csv'").await,
        Err("42501")
    );
    assert_eq!(plan("DROP SCHEMA public CASCADE").await, Err("42501"));
    assert_eq!(plan("CREATE VIEW v AS SELECT 1").await, Err("42501"));
    assert_eq!(
        plan("SET datafusion.runtime.memory_limit = '1G'").await,
        Err("55P02")
    );
    assert_eq!(
        plan("SET datafusion.execution.batch_size = 1").await,
        Ok(Admin)
    );
}
