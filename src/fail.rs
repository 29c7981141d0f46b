//! Crash-testing hooks: when `SLUICE_FAIL_POINT` names a point the process
//! reaches, it dies there as abruptly as under `kill -9`, so tests can stop
//! it between two steps exactly (a sink's upload and its commit, the
//! renames of a bulk append's segments).

/// Aborts the process if `SLUICE_FAIL_POINT` is `name`.
pub fn point(name: &str) {
    static POINT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let point = POINT.get_or_init(|| std::env::var("SLUICE_FAIL_POINT").ok());
    if point.as_deref() == Some(name) {
        tracing::error!(point = name, "fail point reached; aborting");
        std::process::abort();
    }
}
