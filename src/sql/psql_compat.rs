//! Rewrites of the catalog queries psql's meta-commands send that the
//! query engine cannot run as written. Each is a literal fragment psql 15
//! emits, replaced by an equivalent the engine plans; nothing else changes.

/// The PostgreSQL version sluice answers as (`version()`, `SHOW
/// server_version`, the startup parameter), in the form client libraries
/// parse (SQLAlchemy, pgjdbc and psql read the major and minor number).
pub const SERVER_VERSION: &str = "16.6";
/// The same as `server_version_num` reports it (major × 10000 + minor).
pub const SERVER_VERSION_NUM: &str = "160006";

/// (fragment psql sends, replacement).
const REWRITES: &[(&str, &str)] = &[
    // `\d+`: table options. sluice tables have no reloptions and no TOAST.
    (
        "pg_catalog.array_to_string(c.reloptions || array(select 'toast.' || x from pg_catalog.unnest(tc.reloptions) x), ', ')",
        "''",
    ),
];

/// `\du`: a role's groups come from sluice's catalog, not from a
/// correlated ARRAY subquery over pg_auth_members.
const DU_MEMBER_OF: (&str, &str, &str) = (
    "ARRAY(SELECT b.rolname",
    ") as memberof",
    "sluice_member_of(r.rolname) as memberof",
);

/// `sql` with psql's unplannable fragments replaced (borrowed when none).
pub fn rewrite(sql: &str) -> std::borrow::Cow<'_, str> {
    let mut out = std::borrow::Cow::Borrowed(sql);
    let (start, end, with) = DU_MEMBER_OF;
    if let Some(from) = out.find(start) {
        if let Some(len) = out[from..].find(end) {
            let replaced = format!("{}{with}{}", &out[..from], &out[from + len + end.len()..]);
            out = std::borrow::Cow::Owned(replaced);
        }
    }
    for (from, to) in REWRITES {
        if out.contains(from) {
            out = std::borrow::Cow::Owned(out.replace(from, to));
        }
    }
    out
}
