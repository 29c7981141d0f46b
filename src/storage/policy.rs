//! Where SQL may read and write: under the data directory, or under a
//! prefix listed in `[auth] allowed_locations` (local directories and
//! `s3://bucket/prefix/`). Every location a statement names (external
//! tables, sinks, CREATE TABLE … AS) is checked here before anything is
//! created or read: local paths are taken relative to the data dir, `..`
//! is refused, and the deepest existing ancestor is canonicalised, so a
//! symlink out of an allowed directory leads nowhere. S3 buckets must be
//! listed explicitly: the server's credentials are not everyone's.
//!
//! Inside the data directory, sluice's own files are not SQL's: the
//! catalog, stream logs (which still hold columns pipelines drop), spill
//! files, quarantined logs and `secrets/`, plus every secret the config
//! names (password and key files, the TLS key). A location that is one of
//! them, lies under one, or holds one (the data directory itself) is
//! refused, since a table over a directory lists all it holds.

use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};

#[derive(Debug, Clone, Default)]
pub struct LocationPolicy {
    /// Canonical local directories (the data dir first).
    local: Vec<PathBuf>,
    /// `s3://bucket/prefix/` prefixes, each ending in '/'.
    s3: Vec<String>,
    /// Canonical paths of sluice's own files and directories.
    reserved: Vec<PathBuf>,
}

/// What sluice keeps in its data directory, out of SQL's reach.
pub const RESERVED_IN_DATA_DIR: [&str; 5] =
    ["catalog.redb", "streams", "tmp", "quarantine", "secrets"];

impl LocationPolicy {
    /// The data dir plus `allowed` (as configured), without sluice's own
    /// files and the `secrets` the config names. Local entries that do
    /// not exist yet are kept as written (absolute), and must be
    /// canonical already.
    pub fn new(data_dir: &Path, allowed: &[String], secrets: &[PathBuf]) -> Result<LocationPolicy> {
        let mut policy = LocationPolicy::default();
        std::fs::create_dir_all(data_dir)?;
        let data_dir = data_dir.canonicalize()?;
        policy.reserved = RESERVED_IN_DATA_DIR
            .iter()
            .map(|name| data_dir.join(name))
            .chain(
                secrets
                    .iter()
                    .map(|path| canonical_prefix(&data_dir.join(path))),
            )
            .collect();
        policy.local.push(data_dir);
        for entry in allowed {
            if let Some(rest) = entry
                .strip_prefix("s3://")
                .or_else(|| entry.strip_prefix("s3a://"))
            {
                let mut prefix = format!("s3://{rest}");
                if !prefix.ends_with('/') {
                    prefix.push('/');
                }
                policy.s3.push(prefix);
                continue;
            }
            let path = PathBuf::from(entry.strip_prefix("file://").unwrap_or(entry));
            if !path.is_absolute() || has_parent_dir(&path) {
                return Err(Error::InvalidParameter(format!(
                    "auth.allowed_locations: '{entry}' must be an absolute path without '..' or an s3:// prefix"
                )));
            }
            policy.local.push(canonical_prefix(&path));
        }
        Ok(policy)
    }

    /// Refuses (42501) a location outside the allowed ones; `text` as the
    /// statement wrote it (relative paths are under `data_dir`).
    pub fn check(&self, text: &str, data_dir: &Path) -> Result<()> {
        let refused = |why: &str| {
            Error::InsufficientPrivilege(format!(
                "location '{text}' {why}; SQL may use the data directory and the prefixes in [auth] allowed_locations"
            ))
        };
        if let Some(rest) = text
            .strip_prefix("s3://")
            .or_else(|| text.strip_prefix("s3a://"))
        {
            let wanted = format!("s3://{rest}");
            let wanted_dir = if wanted.ends_with('/') {
                wanted
            } else {
                format!("{wanted}/")
            };
            return if self.s3.iter().any(|p| wanted_dir.starts_with(p.as_str())) {
                Ok(())
            } else {
                Err(refused("is in a bucket or prefix not allowed"))
            };
        }
        if text.contains("://") && !text.starts_with("file://") {
            return Err(refused("uses a scheme SQL may not read or write"));
        }
        let path = PathBuf::from(text.strip_prefix("file://").unwrap_or(text));
        if has_parent_dir(&path) {
            return Err(refused("contains '..'"));
        }
        let absolute = if path.is_absolute() {
            path
        } else {
            data_dir.join(path)
        };
        let resolved = canonical_prefix(&absolute);
        if let Some(own) = self
            .reserved
            .iter()
            .find(|own| resolved.starts_with(own) || own.starts_with(&resolved))
        {
            return Err(refused(&format!(
                "reaches {}, which is sluice's own (catalog, stream logs, spill files, secrets)",
                own.display()
            )));
        }
        if self
            .local
            .iter()
            .any(|allowed| resolved.starts_with(allowed))
        {
            Ok(())
        } else {
            Err(refused("is outside the allowed directories"))
        }
    }

    /// Refuses (42501) a file a sink reads a secret from (`password_file`)
    /// unless it is in the data directory's `secrets/` (where no table
    /// can reach it) or where SQL may read.
    pub fn check_secret(&self, text: &str, data_dir: &Path) -> Result<()> {
        let path = PathBuf::from(text.strip_prefix("file://").unwrap_or(text));
        let in_secrets = !has_parent_dir(&path)
            && self.local.first().is_some_and(|data| {
                canonical_prefix(&data_dir.join(&path)).starts_with(data.join("secrets"))
            });
        if in_secrets {
            return Ok(());
        }
        self.check(text, data_dir)
    }
}

fn has_parent_dir(path: &Path) -> bool {
    path.components().any(|c| c == Component::ParentDir)
}

/// `path` with its deepest existing ancestor canonicalised (symlinks
/// resolved) and the rest, which does not exist yet, appended.
fn canonical_prefix(path: &Path) -> PathBuf {
    let mut existing = path.to_path_buf();
    let mut rest = Vec::new();
    loop {
        if let Ok(canonical) = existing.canonicalize() {
            let mut out = canonical;
            for part in rest.iter().rev() {
                out.push(part);
            }
            return out;
        }
        match (
            existing.file_name().map(|n| n.to_owned()),
            existing.parent(),
        ) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => return path.to_path_buf(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_data_dir_and_listed_prefixes_are_allowed() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let shared = tmp.path().join("shared");
        std::fs::create_dir_all(&shared).unwrap();
        let policy = LocationPolicy::new(
            &data,
            &[shared.display().to_string(), "s3://lake/clicks".into()],
            &[tmp.path().join("sluice.pw"), "keys/etl.key".into()],
        )
        .unwrap();
        for ok in [
            "lake",
            "warehouse/t",
            "s3://lake/clicks/",
            "s3://lake/clicks/2026/",
        ] {
            policy.check(ok, &data).unwrap();
        }
        policy
            .check(&shared.join("x").display().to_string(), &data)
            .unwrap();
        policy
            .check(&format!("file://{}", data.join("a").display()), &data)
            .unwrap();
        for bad in [
            "/etc/passwd",
            "../../secret.txt",
            "lake/../../x",
            "s3://lake/other/",
            "s3://lakehouse/",
            "s3://lake/clicksx/",
            "gs://b/x",
            "file:///etc",
            "",
            ".",
            "catalog.redb",
            "streams",
            "streams/1/00000000.seg",
            "tmp/spill",
            "secrets/etl.pw",
            "./secrets",
            "keys/etl.key",
            "keys",
        ] {
            let err = policy.check(bad, &data).unwrap_err();
            assert_eq!(err.sqlstate(), "42501", "{bad}: {err}");
        }
        policy
            .check(&data.display().to_string(), &data)
            .unwrap_err();
        policy.check_secret("secrets/etl.pw", &data).unwrap();
        policy.check_secret("lake/etl.pw", &data).unwrap();
        policy
            .check_secret("secrets/../catalog.redb", &data)
            .unwrap_err();
        policy.check_secret("/etc/shadow", &data).unwrap_err();
    }

    #[test]
    fn a_symlink_out_of_the_data_dir_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let policy = LocationPolicy::new(&data, &[], &[]).unwrap();
        std::os::unix::fs::symlink("/etc", data.join("etc")).unwrap();
        let err = policy.check("etc/passwd", &data).unwrap_err();
        assert_eq!(err.sqlstate(), "42501");
        policy.check("not-yet/created/dir", &data).unwrap();
    }
}
