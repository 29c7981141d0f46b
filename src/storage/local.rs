//! Local files for the query path. `LocalFileSystem` hands every read to
//! tokio's blocking pool, a ranged get twice (open, then read); a query over
//! a sink's small files makes a few such reads per file (footer, page
//! index, bloom filter, column chunks), and the thread hand-offs cost more
//! than reading the page-cached bytes. Here small reads are served inline
//! with positional reads; large ones, reads with preconditions, writes,
//! listings and deletes go to `LocalFileSystem` unchanged.

use std::fmt;
use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    Attributes, CopyOptions, GetOptions, GetRange, GetResult, GetResultPayload, ListResult,
    MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions, PutOptions, PutPayload,
    PutResult, RenameOptions, Result,
};

/// The most bytes one call reads inline (on the calling task's thread);
/// a Parquet column chunk of a sink file is far below it.
const INLINE_READ_MAX_BYTES: u64 = 4 * 1024 * 1024;

#[derive(Debug, Default)]
pub struct LocalStore {
    inner: LocalFileSystem,
}

impl LocalStore {
    pub fn new() -> LocalStore {
        LocalStore::default()
    }

    fn open(&self, location: &Path) -> Result<File> {
        let path = self.inner.path_to_filesystem(location)?;
        File::open(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                object_store::Error::NotFound {
                    path: path.display().to_string(),
                    source: e.into(),
                }
            } else {
                generic(e)
            }
        })
    }
}

fn generic(e: impl std::error::Error + Send + Sync + 'static) -> object_store::Error {
    object_store::Error::Generic {
        store: "LocalStore",
        source: Box::new(e),
    }
}

fn read_at(file: &File, range: &Range<u64>) -> Result<Bytes> {
    let mut buf = vec![0u8; (range.end - range.start) as usize];
    file.read_exact_at(&mut buf, range.start).map_err(generic)?;
    Ok(buf.into())
}

impl fmt::Display for LocalStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LocalStore")
    }
}

#[async_trait]
impl ObjectStore for LocalStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let small = match &options.range {
            Some(GetRange::Bounded(r)) => r.end.saturating_sub(r.start) <= INLINE_READ_MAX_BYTES,
            Some(GetRange::Suffix(n)) => *n <= INLINE_READ_MAX_BYTES,
            _ => options.head,
        };
        let preconditions = options.if_match.is_some()
            || options.if_none_match.is_some()
            || options.if_modified_since.is_some()
            || options.if_unmodified_since.is_some()
            || options.version.is_some();
        if !small || preconditions {
            return self.inner.get_opts(location, options).await;
        }
        let file = self.open(location)?;
        let metadata = file.metadata().map_err(generic)?;
        let meta = ObjectMeta {
            location: location.clone(),
            last_modified: metadata
                .modified()
                .map(chrono::DateTime::<chrono::Utc>::from)
                .unwrap_or_default(),
            size: metadata.len(),
            e_tag: None,
            version: None,
        };
        let range = match &options.range {
            Some(r) => r.as_range(meta.size).map_err(generic)?,
            None => 0..meta.size,
        };
        let bytes = if options.head {
            Bytes::new()
        } else {
            read_at(&file, &range)?
        };
        Ok(GetResult {
            payload: GetResultPayload::Stream(futures::stream::once(async { Ok(bytes) }).boxed()),
            meta,
            range,
            attributes: Attributes::default(),
        })
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        let total: u64 = ranges.iter().map(|r| r.end.saturating_sub(r.start)).sum();
        if total > INLINE_READ_MAX_BYTES {
            return self.inner.get_ranges(location, ranges).await;
        }
        let file = self.open(location)?;
        ranges.iter().map(|r| read_at(&file, r)).collect()
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt;

    #[tokio::test]
    async fn inline_reads_match_the_file_system_store() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("data.bin");
        let content: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&file, &content).unwrap();
        let path = Path::from_absolute_path(&file).unwrap();
        let local = LocalStore::new();
        let reference = LocalFileSystem::new();
        for range in [0..10, 99_990..100_000, 4096..70_000] {
            assert_eq!(
                local.get_range(&path, range.clone()).await.unwrap(),
                reference.get_range(&path, range).await.unwrap()
            );
        }
        let ranges = [5..6, 10..20_000, 50_000..50_001];
        assert_eq!(
            local.get_ranges(&path, &ranges).await.unwrap(),
            reference.get_ranges(&path, &ranges).await.unwrap()
        );
        assert_eq!(local.head(&path).await.unwrap().size, 100_000);
        let suffix = GetOptions {
            range: Some(GetRange::Suffix(8)),
            ..Default::default()
        };
        let tail = local.get_opts(&path, suffix).await.unwrap();
        assert_eq!(tail.range, 99_992..100_000);
        assert_eq!(tail.bytes().await.unwrap(), &content[99_992..]);
        let missing = Path::from_absolute_path(dir.path().join("nope")).unwrap();
        assert!(matches!(
            local.get_range(&missing, 0..1).await,
            Err(object_store::Error::NotFound { .. })
        ));
        // Past the end: the same answer (clamped, or an error) as the reference.
        for range in [99_999..100_010, 100_001..100_002] {
            let (ours, theirs) = (
                local.get_range(&path, range.clone()).await,
                reference.get_range(&path, range).await,
            );
            assert_eq!(ours.is_ok(), theirs.is_ok());
            if let (Ok(a), Ok(b)) = (ours, theirs) {
                assert_eq!(a, b);
            }
        }
    }
}
