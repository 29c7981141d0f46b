//! Staged uploads of plain Parquet sinks: engines that list a sink's
//! directory (Athena, Spark, Trino, pyarrow) must never see a file that is
//! not committed. A file is uploaded under `_sluice_staging/` at the
//! location (a prefix Hive readers skip: `_` and `.` names are hidden to
//! them), committed in the catalog under its final name, and only then
//! moved there (a rename on local disks, copy + delete on S3).
//!
//! A crash between the commit and the move leaves a staged file the
//! catalog lists under its final name: the next start moves it (roll
//! forward). A staged file the catalog does not list is an upload whose
//! commit never happened: the next start deletes it. Delta sinks write in
//! place: their readers follow the log, which lists committed files only.

use std::collections::HashSet;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::ObjectStoreExt;

use super::core::{file_prefix, SinkCore};
use crate::catalog::SinkFormat;
use crate::error::Result;
use crate::storage::Location;

/// Where uploads wait for their commit, under the sink's location.
pub const STAGING_DIR: &str = "_sluice_staging";

/// The path a file whose final place is `relative` is uploaded to.
pub fn upload_relative(format: SinkFormat, relative: &str) -> String {
    match format {
        SinkFormat::Delta => relative.to_string(),
        _ => format!("{STAGING_DIR}/{relative}"),
    }
}

/// A committed file still at its upload path.
#[derive(Debug, Clone)]
pub struct Move {
    pub from: Path,
    pub to: Path,
}

/// Moves committed files to their final names and makes that durable.
pub async fn promote(location: &Location, moves: &[Move]) -> Result<()> {
    for m in moves.iter().filter(|m| m.from != m.to) {
        crate::fail::point("sink.before_promote");
        match location.store.rename(&m.from, &m.to).await {
            Ok(()) => {}
            // Moved by an earlier attempt whose later moves failed.
            Err(object_store::Error::NotFound { .. })
                if location.store.head(&m.to).await.is_ok() => {}
            Err(e) => return Err(e.into()),
        }
    }
    let finals: Vec<Path> = moves.iter().map(|m| m.to.clone()).collect();
    location.make_durable(&finals).await
}

/// At start: finishes the moves a crash interrupted and deletes staged
/// uploads that were never committed.
pub async fn recover(core: &SinkCore) -> Result<()> {
    let location = &core.location;
    let staging = location.child(STAGING_DIR);
    let prefix = file_prefix(core.def.id);
    let files = core.files();
    let listed: HashSet<&str> = files.iter().map(|f| f.path.as_str()).collect();
    let staged: Vec<_> = location.store.list(Some(&staging)).try_collect().await?;
    for meta in staged {
        if !meta
            .location
            .filename()
            .is_some_and(|n| n.starts_with(&prefix))
        {
            continue;
        }
        let Some(relative) = meta.location.prefix_match(&staging) else {
            continue;
        };
        let relative: Vec<String> = relative.map(|p| p.as_ref().to_string()).collect();
        let to = location.child(&relative.join("/"));
        if listed.contains(to.as_ref()) {
            tracing::info!(path = %to, "moving a committed sink file into place");
            promote(
                location,
                &[Move {
                    from: meta.location,
                    to,
                }],
            )
            .await?;
        } else {
            tracing::info!(path = %meta.location, "removing an uncommitted sink upload");
            location.store.delete(&meta.location).await?;
        }
    }
    Ok(())
}
