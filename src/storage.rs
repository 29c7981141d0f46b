//! Object stores: where sinks deliver and external tables read. One
//! registry serves both the query engine and the sinks, so a bucket is
//! configured once: local directories through [`local::LocalStore`]
//! (`LocalFileSystem` with small reads served inline), `s3://`
//! buckets through object_store's S3 client, built on first use from the
//! standard AWS environment variables plus `[s3]` in the config (endpoint,
//! region, plain HTTP for S3-compatible stores).

use std::path::Path as FsPath;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::execution::object_store::{
    DefaultObjectStoreRegistry, ObjectStoreRegistry, ObjectStoreUrl,
};
use datafusion::parquet::arrow::AsyncArrowWriter;
use datafusion::parquet::file::properties::WriterProperties;
use object_store::aws::AmazonS3Builder;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, RetryConfig};
use url::Url;

pub use local::LocalStore;
pub use policy::LocationPolicy;

use crate::config::S3Config;

pub mod delta;
mod local;
mod policy;
use crate::error::{Error, Result};

/// Object stores by URL (`file:///`, `s3://bucket`); S3 buckets are added
/// on first use.
#[derive(Debug)]
pub struct StoreRegistry {
    inner: DefaultObjectStoreRegistry,
    s3: S3Config,
    policy: LocationPolicy,
}

impl StoreRegistry {
    pub fn new(s3: S3Config, policy: LocationPolicy) -> StoreRegistry {
        let inner = DefaultObjectStoreRegistry::new();
        inner.register_store(
            ObjectStoreUrl::local_filesystem().as_ref(),
            Arc::new(LocalStore::new()),
        );
        StoreRegistry { inner, s3, policy }
    }

    /// Where SQL may read and write.
    pub fn policy(&self) -> &LocationPolicy {
        &self.policy
    }

    fn s3_store(&self, bucket: &str) -> Result<Arc<dyn ObjectStore>> {
        // Bounded retries inside one request; a sink retries on top with
        // its own backoff and shows the failure meanwhile.
        let retry = RetryConfig {
            max_retries: 3,
            retry_timeout: Duration::from_secs(15),
            ..RetryConfig::default()
        };
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_retry(retry);
        // Environment variables win; else the shared credentials file's
        // profile (AWS_PROFILE, default "default"), as the AWS CLI does.
        if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
            if let Some(creds) = profile::credentials() {
                builder = builder
                    .with_access_key_id(creds.access_key_id)
                    .with_secret_access_key(creds.secret_access_key);
                if let Some(token) = creds.session_token {
                    builder = builder.with_token(token);
                }
            }
        }
        if let Some(endpoint) = &self.s3.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        let env_region = std::env::var_os("AWS_REGION").or(std::env::var_os("AWS_DEFAULT_REGION"));
        match (&self.s3.region, env_region) {
            (Some(region), _) => builder = builder.with_region(region),
            (None, None) => {
                if let Some(region) = profile::region() {
                    builder = builder.with_region(region);
                }
            }
            (None, Some(_)) => {}
        }
        if self.s3.allow_http {
            builder = builder.with_allow_http(true);
        }
        Ok(Arc::new(builder.build()?))
    }
}

impl ObjectStoreRegistry for StoreRegistry {
    fn register_store(
        &self,
        url: &Url,
        store: Arc<dyn ObjectStore>,
    ) -> Option<Arc<dyn ObjectStore>> {
        self.inner.register_store(url, store)
    }

    fn get_store(&self, url: &Url) -> datafusion::common::Result<Arc<dyn ObjectStore>> {
        if let Ok(store) = self.inner.get_store(url) {
            return Ok(store);
        }
        match (url.scheme(), url.host_str()) {
            ("s3" | "s3a", Some(bucket)) => {
                let store = self.s3_store(bucket)?;
                self.inner.register_store(url, store.clone());
                Ok(store)
            }
            _ => Err(Error::InvalidParameter(format!(
                "no object store for \"{url}\": use s3://bucket/prefix or a local path"
            ))
            .into()),
        }
    }
}

/// A resolved sink or table location: a store and a prefix inside it.
#[derive(Debug, Clone)]
pub struct Location {
    /// The store's URL (`file:///`, `s3://bucket`), as DataFusion scans name it.
    pub url: ObjectStoreUrl,
    pub store: Arc<dyn ObjectStore>,
    /// The directory inside the store (no leading or trailing slash).
    pub prefix: Path,
}

impl Location {
    /// Resolves `s3://bucket/prefix`, `file:///abs/dir`, or a directory
    /// relative to the data dir.
    pub fn resolve(text: &str, data_dir: &FsPath, stores: &StoreRegistry) -> Result<Location> {
        let bad = |why: &str| Error::InvalidParameter(format!("location '{text}': {why}"));
        if text.trim().is_empty() {
            return Err(bad("must not be empty"));
        }
        stores.policy.check(text, data_dir)?;
        if let Some(rest) = text.strip_prefix("file://") {
            if !rest.starts_with('/') {
                return Err(bad("file:// locations must be absolute (file:///dir)"));
            }
            return Self::local(FsPath::new(rest), stores);
        }
        if text.contains("://") {
            let url = Url::parse(text).map_err(|e| bad(&e.to_string()))?;
            if !matches!(url.scheme(), "s3" | "s3a") {
                return Err(bad("supported schemes are s3:// and file://"));
            }
            let bucket = url
                .host_str()
                .filter(|b| !b.is_empty())
                .ok_or_else(|| bad("names no bucket"))?;
            let store_url = ObjectStoreUrl::parse(format!("s3://{bucket}"))?;
            let store = stores.get_store(store_url.as_ref())?;
            let prefix =
                Path::parse(url.path().trim_matches('/')).map_err(|e| bad(&e.to_string()))?;
            return Ok(Location {
                url: store_url,
                store,
                prefix,
            });
        }
        let path = FsPath::new(text);
        if path.is_absolute() {
            return Self::local(path, stores);
        }
        if path
            .components()
            .any(|c| c == std::path::Component::ParentDir)
        {
            return Err(bad("a relative location must stay inside the data dir"));
        }
        Self::local(&data_dir.join(path), stores)
    }

    /// A location with nothing behind it (an empty in-memory store), for
    /// sinks that deliver to an HTTP endpoint rather than into files.
    pub fn detached() -> Result<Location> {
        Ok(Location {
            url: ObjectStoreUrl::parse("memory://")?,
            store: Arc::new(object_store::memory::InMemory::new()),
            prefix: Path::default(),
        })
    }

    /// A local directory, read and written through the registry's one
    /// local store (the one queries use).
    fn local(dir: &FsPath, stores: &StoreRegistry) -> Result<Location> {
        std::fs::create_dir_all(dir).map_err(|e| {
            Error::InvalidParameter(format!("cannot create directory {}: {e}", dir.display()))
        })?;
        let dir = dir.canonicalize()?;
        let prefix = Path::from_absolute_path(&dir)
            .map_err(|e| Error::InvalidParameter(format!("{}: {e}", dir.display())))?;
        let url = ObjectStoreUrl::local_filesystem();
        Ok(Location {
            store: stores.get_store(url.as_ref())?,
            url,
            prefix,
        })
    }

    /// `prefix/relative`, where `relative` is already escaped (Hive
    /// `%XX`) and names exactly that object: parsed, not encoded again.
    /// Empty parts are skipped, so `"/name"` is `prefix/name`.
    pub fn child(&self, relative: &str) -> Path {
        let mut path = self.prefix.clone();
        for part in relative.split('/').filter(|p| !p.is_empty()) {
            let joined = if path.as_ref().is_empty() {
                part.to_string()
            } else {
                format!("{path}/{part}")
            };
            path = Path::parse(joined).unwrap_or_else(|_| path.join(part));
        }
        path
    }

    /// A Parquet writer whose bytes go to `prefix/relative` as one upload:
    /// buffered up to `part_size_bytes`, a multipart upload beyond, and
    /// visible only once the writer finishes.
    pub fn parquet_writer(
        &self,
        relative: &str,
        schema: SchemaRef,
        props: WriterProperties,
        part_size_bytes: usize,
    ) -> Result<(Path, AsyncArrowWriter<BufWriter>)> {
        let path = self.child(relative);
        let upload = BufWriter::with_capacity(self.store.clone(), path.clone(), part_size_bytes);
        Ok((
            path,
            AsyncArrowWriter::try_new(upload, schema, Some(props))?,
        ))
    }

    /// Makes written objects durable before a commit names them. An object
    /// store's completed upload is durable; a local file is not until it and
    /// every directory entry leading to it (partition directories the
    /// upload created) are fsynced, which `LocalFileSystem` never does.
    pub async fn make_durable(&self, objects: &[Path]) -> Result<()> {
        if self.url != ObjectStoreUrl::local_filesystem() || objects.is_empty() {
            return Ok(());
        }
        let fs = object_store::local::LocalFileSystem::new();
        let root = fs.path_to_filesystem(&self.prefix)?;
        let files = objects
            .iter()
            .map(|p| fs.path_to_filesystem(p))
            .collect::<object_store::Result<Vec<_>>>()?;
        tokio::task::spawn_blocking(move || sync_local(&root, &files))
            .await
            .map_err(|e| Error::Internal(e.to_string()))?
    }

    /// The location as a URL with a trailing slash, as DataFusion's
    /// listing tables and other readers take it.
    pub fn url_string(&self) -> String {
        // The store URL ends in '/': `file:///`, `s3://bucket/`.
        let base = self.url.as_str();
        if self.prefix.as_ref().is_empty() {
            base.to_string()
        } else {
            format!("{base}{}/", self.prefix)
        }
    }

    /// Proves the location is writable now: writes and deletes a marker
    /// object, so a bad bucket or credentials fail the DDL, not later.
    pub async fn check_writable(&self) -> Result<()> {
        // Listing is needed anyway (the cleanup of uncommitted files) and
        // fails for a missing bucket on stores that accept blind PUTs.
        self.store
            .list_with_delimiter(Some(&self.prefix))
            .await
            .map_err(|e| Error::Storage(format!("location cannot be listed: {e}")))?;
        let marker = self.prefix.clone().join("_sluice_write_check");
        self.store
            .put(&marker, bytes::Bytes::from_static(b"ok").into())
            .await
            .map_err(|e| Error::Storage(format!("location is not writable: {e}")))?;
        self.store.delete(&marker).await?;
        Ok(())
    }
}

/// Fsyncs `files`, then each directory from theirs up to `root` (once).
fn sync_local(root: &FsPath, files: &[std::path::PathBuf]) -> Result<()> {
    let fsync = |path: &FsPath| -> Result<()> {
        crate::fail::io("sink.fsync")
            .and_then(|()| std::fs::File::open(path)?.sync_all())
            .map_err(|e| Error::Storage(format!("could not fsync {}: {e}", path.display())))
    };
    let mut dirs = std::collections::BTreeSet::new();
    for file in files {
        fsync(file)?;
        let mut dir = file.parent();
        while let Some(d) = dir {
            if !dirs.insert(d.to_path_buf()) || d == root || !d.starts_with(root) {
                break;
            }
            dir = d.parent();
        }
    }
    for dir in &dirs {
        fsync(dir)?;
    }
    Ok(())
}

/// The AWS shared config files (`~/.aws/credentials`, `~/.aws/config`): the
/// access key and region of the selected profile.
mod profile {
    use std::collections::HashMap;
    use std::path::PathBuf;

    pub struct Credentials {
        pub access_key_id: String,
        pub secret_access_key: String,
        pub session_token: Option<String>,
    }

    fn profile_name() -> String {
        std::env::var("AWS_PROFILE").unwrap_or_else(|_| "default".into())
    }

    fn aws_file(env: &str, name: &str) -> Option<PathBuf> {
        std::env::var_os(env)
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".aws").join(name)))
    }

    pub fn credentials() -> Option<Credentials> {
        let text = std::fs::read_to_string(aws_file("AWS_SHARED_CREDENTIALS_FILE", "credentials")?)
            .ok()?;
        let mut section = parse(&text).remove(&profile_name())?;
        Some(Credentials {
            access_key_id: section.remove("aws_access_key_id")?,
            secret_access_key: section.remove("aws_secret_access_key")?,
            session_token: section.remove("aws_session_token"),
        })
    }

    pub fn region() -> Option<String> {
        let text = std::fs::read_to_string(aws_file("AWS_CONFIG_FILE", "config")?).ok()?;
        let name = profile_name();
        // In `config`, profiles other than default are `[profile name]`.
        let key = if name == "default" {
            name
        } else {
            format!("profile {name}")
        };
        parse(&text).remove(&key)?.remove("region")
    }

    /// INI sections → key → value (comments with `#` or `;`).
    pub(super) fn parse(text: &str) -> HashMap<String, HashMap<String, String>> {
        let mut out: HashMap<String, HashMap<String, String>> = HashMap::new();
        let mut current: Option<String> = None;
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                current = Some(name.trim().to_string());
                continue;
            }
            if let (Some(section), Some((key, value))) = (&current, line.split_once('=')) {
                out.entry(section.clone())
                    .or_default()
                    .insert(key.trim().to_lowercase(), value.trim().to_string());
            }
        }
        out
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn profiles_parse_like_the_aws_cli_reads_them() {
            let text = "[default]\naws_access_key_id = AKIA1\naws_secret_access_key=s1\n\n# c\n[profile lake]\nregion = eu-west-1\n[lake]\nAWS_ACCESS_KEY_ID = AKIA2\n";
            let parsed = super::parse(text);
            assert_eq!(parsed["default"]["aws_access_key_id"], "AKIA1");
            assert_eq!(parsed["default"]["aws_secret_access_key"], "s1");
            assert_eq!(parsed["profile lake"]["region"], "eu-west-1");
            assert_eq!(parsed["lake"]["aws_access_key_id"], "AKIA2");
        }
    }
}
