//! Fault-injection hooks for tests, driven by `SLUICE_FAIL_POINT`:
//!
//! - `name`: the process dies when it reaches point `name`, as abruptly as
//!   under `kill -9`, so tests can stop it between two steps exactly (a
//!   sink's upload and its commit, the renames of a bulk append);
//! - `name=ENOSPC` or `name=EIO`: the I/O operation at point `name` fails
//!   with that error instead (an fsync, a log write, a catalog write);
//! - `name=ENOSPC@/some/file`: the same, but only while `/some/file`
//!   exists, so a test can let the fault come and go in a running server.
//!
//! Unset (production), every point costs one branch on a cached `None`.

use std::path::PathBuf;
use std::sync::OnceLock;

struct Spec {
    name: String,
    errno: Option<i32>,
    while_exists: Option<PathBuf>,
}

fn spec() -> Option<&'static Spec> {
    static SPEC: OnceLock<Option<Spec>> = OnceLock::new();
    SPEC.get_or_init(|| std::env::var("SLUICE_FAIL_POINT").ok().map(|s| parse(&s)))
        .as_ref()
}

fn parse(text: &str) -> Spec {
    let Some((name, action)) = text.split_once('=') else {
        return Spec {
            name: text.to_string(),
            errno: None,
            while_exists: None,
        };
    };
    let (error, trigger) = match action.split_once('@') {
        Some((e, path)) => (e, Some(PathBuf::from(path))),
        None => (action, None),
    };
    let errno = match error {
        "ENOSPC" => 28,
        "EDQUOT" => 122,
        _ => 5, // EIO
    };
    Spec {
        name: name.to_string(),
        errno: Some(errno),
        while_exists: trigger,
    }
}

/// Aborts the process if `SLUICE_FAIL_POINT` is `name`.
pub fn point(name: &str) {
    if let Some(spec) = spec().filter(|s| s.name == name && s.errno.is_none()) {
        tracing::error!(point = spec.name, "fail point reached; aborting");
        std::process::abort();
    }
}

/// The injected I/O error of point `name`, if `SLUICE_FAIL_POINT` names it
/// with an error (and its trigger file, if any, exists).
pub fn io(name: &str) -> std::io::Result<()> {
    let Some(spec) = spec().filter(|s| s.name == name) else {
        return Ok(());
    };
    let Some(errno) = spec.errno else {
        return Ok(());
    };
    if spec.while_exists.as_ref().is_some_and(|p| !p.exists()) {
        return Ok(());
    }
    tracing::warn!(point = name, errno, "injected I/O error");
    Err(std::io::Error::from_raw_os_error(errno))
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn specs_parse() {
        let abort = parse("sink.after_upload");
        assert_eq!(abort.name, "sink.after_upload");
        assert!(abort.errno.is_none());
        let full = parse("catalog.write=ENOSPC@/tmp/x");
        assert_eq!(full.name, "catalog.write");
        assert_eq!(full.errno, Some(28));
        assert_eq!(full.while_exists.as_deref(), Some("/tmp/x".as_ref()));
        assert_eq!(parse("log.fsync=EIO").errno, Some(5));
    }
}
