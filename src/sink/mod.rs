//! The lake: where eavlake's objects live and how they are named, on any `object_store` (a local
//! folder by default, `s3://…`, `memory://` for tests).
//!
//! Layout under the lake's root:
//! - `changes/<entity_type>/tenant_id=<t>/date=<YYYY-MM-DD>/<stream>-<first seq>-<last seq>.parquet`:
//!   change rows. Names are deterministic in the input (stream and the range of stream positions
//!   of the flush), so a flush redone after a crash overwrites the same objects.
//! - `current/<entity_type>/tenant_id=<t>/entities-<lo>-<hi>.parquet`: current state, one object
//!   per tenant and range of entity_id, replaced by one atomic PUT (see `compact`).
//! - `dead_letters/<stream>/<first seq>-<last seq>.jsonl`: records that could not be used.
//! - `_eavlake/`: the lake's own records (settings, catalog, per-stream progress).
//!
//! Contract: [`Lake::put`] returns only once the object is durable (the store acknowledged it);
//! transient store errors of every request are retried with exponential backoff (100 ms
//! doubling, 8 tries) before the error is returned. [`Lake::put_if`] writes only if the object is still the version that
//! was read (compare-and-swap): S3 and memory stores do it with conditional requests, a local
//! folder with a lock file per object (`_eavlake/locks/`), which serialises processes of one
//! machine.

pub mod aws_credentials;
pub mod parquet;

use crate::secret::Secret;
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, PutPayload};
use std::sync::Arc;
use std::time::Duration;

/// Settings a lake keeps for its whole life (`_eavlake/lake.json`): changing them would put an
/// entity in two current-state objects or rescale decimals under readers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LakeSettings {
    pub format_version: u32,
    pub range_size: i64,
    pub decimal_scale: u32,
}

const LAKE_FORMAT_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("lake `{url}` was created with {key} = {recorded}; the configuration says {configured}")]
    Settings { url: String, key: &'static str, recorded: String, configured: String },
    #[error("lake location `{url}`: {message}")]
    Location { url: String, message: String },
    #[error("object store, {op} `{path}`: {source}")]
    Store {
        op: &'static str,
        path: String,
        #[source]
        source: object_store::Error,
    },
    #[error("Parquet `{path}`: {message}")]
    Parquet { path: String, message: String },
    #[error("`{path}` changed since it was read (another writer)")]
    Conflict { path: String },
}

/// The version of an object as read, for [`Lake::put_if`]; `None` inside means it did not exist.
#[derive(Debug, Clone, PartialEq)]
pub struct Version(Option<VersionTag>);

#[derive(Debug, Clone, PartialEq)]
enum VersionTag {
    /// What the store reported (S3, memory).
    Store(object_store::UpdateVersion),
    /// A local folder: the content itself decides (its hash).
    Content(u64),
}

impl Version {
    /// The version of an object that does not exist yet.
    pub fn absent() -> Version {
        Version(None)
    }
}

/// S3 settings beyond the URL. Credentials not given here come from the rest of the standard
/// AWS chain (see [`aws_credentials`]).
#[derive(Debug, Clone, Default)]
pub struct S3Options {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub allow_http: bool,
    pub access_key_id: Option<Secret>,
    pub secret_access_key: Option<Secret>,
    pub session_token: Option<Secret>,
    /// A profile of the shared credentials file (else `AWS_PROFILE`, else `[default]`).
    pub profile: Option<String>,
}

/// A lake on an object store.
#[derive(Clone)]
pub struct Lake {
    store: Arc<dyn ObjectStore>,
    url: String,
    /// The folder of a local lake: compare-and-swap takes a lock file there.
    local_root: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for Lake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Lake({})", self.url)
    }
}

const ATTEMPTS: u32 = 8;

impl Lake {
    /// Opens a lake from a local folder path or a URL (`file://`, `s3://bucket/prefix`,
    /// `memory://`). A local folder is created if missing.
    pub fn open(location: &str, s3: &S3Options) -> Result<Lake, SinkError> {
        let err = |message: String| SinkError::Location { url: location.to_string(), message };
        let mut local_root = None;
        let store: Arc<dyn ObjectStore> = if let Some(rest) = location.strip_prefix("s3://") {
            if rest.trim_matches('/').is_empty() {
                return Err(err("no bucket in the URL".into()));
            }
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let mut b = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
            if let Some(e) = &s3.endpoint {
                b = b.with_endpoint(e).with_virtual_hosted_style_request(false);
            }
            let env = |k: &str| std::env::var(k).ok();
            let profile = aws_credentials::from_profile(s3.profile.as_deref(), s3.access_key_id.is_some(), &env)
                .map_err(|e| err(e.to_string()))?;
            let region_in_env = env("AWS_REGION").or_else(|| env("AWS_DEFAULT_REGION")).is_some();
            let region = s3.region.clone().or_else(|| {
                // The profile's region yields to the variables, as in the AWS SDKs.
                profile.as_ref().and_then(|p| p.region.clone()).filter(|_| !region_in_env)
            });
            if let Some(r) = region {
                b = b.with_region(r);
            }
            let (id, secret, token) = match &profile {
                Some(p) => (Some(&p.access_key_id), Some(&p.secret_access_key), p.session_token.as_ref()),
                None => (s3.access_key_id.as_ref(), s3.secret_access_key.as_ref(), s3.session_token.as_ref()),
            };
            if let Some(k) = id {
                b = b.with_access_key_id(k.expose());
            }
            if let Some(k) = secret {
                b = b.with_secret_access_key(k.expose());
            }
            if let Some(t) = token {
                b = b.with_token(t.expose());
            }
            if s3.allow_http {
                // Only when asked: otherwise AWS_ALLOW_HTTP from the environment stands.
                b = b.with_allow_http(true);
            }
            let store = b.build().map_err(|e| err(e.to_string()))?;
            let prefix = prefix.trim_matches('/');
            if prefix.is_empty() {
                Arc::new(store)
            } else {
                Arc::new(object_store::prefix::PrefixStore::new(store, prefix))
            }
        } else if location == "memory://" || location.starts_with("memory://") {
            Arc::new(object_store::memory::InMemory::new())
        } else {
            let dir = location.strip_prefix("file://").unwrap_or(location);
            if location.contains("://") && !location.starts_with("file://") {
                return Err(err("unsupported scheme (use a folder, file://, s3:// or memory://)".into()));
            }
            std::fs::create_dir_all(dir).map_err(|e| err(format!("cannot create the folder: {e}")))?;
            local_root = Some(std::path::PathBuf::from(dir));
            let store = object_store::local::LocalFileSystem::new_with_prefix(dir)
                .map_err(|e| err(e.to_string()))?
                .with_automatic_cleanup(true);
            Arc::new(store)
        };
        Ok(Lake { store, url: location.to_string(), local_root })
    }

    /// A lake on a store built elsewhere (a wrapper that injects faults, in tests).
    pub fn from_store(store: Arc<dyn ObjectStore>, url: &str) -> Lake {
        Lake { store, url: url.to_string(), local_root: None }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Records the lake's settings on first use and refuses a configuration that disagrees with
    /// them later.
    pub async fn ensure_settings(&self, range_size: i64, decimal_scale: u32) -> Result<LakeSettings, SinkError> {
        let path = Lake::meta_path("lake.json");
        let wanted = LakeSettings { format_version: LAKE_FORMAT_VERSION, range_size, decimal_scale };
        let Some(bytes) = self.get(&path).await? else {
            let text = serde_json::to_vec_pretty(&wanted).unwrap_or_default();
            self.put(&path, Bytes::from(text)).await?;
            return Ok(wanted);
        };
        let recorded: LakeSettings = serde_json::from_slice(&bytes)
            .map_err(|e| SinkError::Location { url: self.url.clone(), message: format!("{path}: {e}") })?;
        let mismatch = |key, recorded: String, configured: String| SinkError::Settings {
            url: self.url.clone(),
            key,
            recorded,
            configured,
        };
        if recorded.format_version != LAKE_FORMAT_VERSION {
            return Err(mismatch(
                "format_version",
                recorded.format_version.to_string(),
                LAKE_FORMAT_VERSION.to_string(),
            ));
        }
        if recorded.range_size != range_size {
            return Err(mismatch("lake.range_size", recorded.range_size.to_string(), range_size.to_string()));
        }
        if recorded.decimal_scale != decimal_scale {
            return Err(mismatch("lake.decimal_scale", recorded.decimal_scale.to_string(), decimal_scale.to_string()));
        }
        Ok(recorded)
    }

    pub fn changes_prefix(entity_type: &str, tenant_id: Option<i64>) -> Path {
        match tenant_id {
            Some(t) => Path::from_iter(["changes", entity_type, &format!("tenant_id={t}")]),
            None => Path::from_iter(["changes", entity_type]),
        }
    }

    pub fn changes_path(entity_type: &str, tenant_id: i64, date: &str, file: &str) -> Path {
        Path::from_iter(["changes", entity_type, &format!("tenant_id={tenant_id}"), &format!("date={date}"), file])
    }

    pub fn current_prefix(entity_type: &str, tenant_id: i64) -> Path {
        Path::from_iter(["current", entity_type, &format!("tenant_id={tenant_id}")])
    }

    pub fn current_path(entity_type: &str, tenant_id: i64, lo: i64, hi: i64) -> Path {
        Path::from_iter([
            "current",
            entity_type,
            &format!("tenant_id={tenant_id}"),
            &format!("entities-{lo:012}-{hi:012}.parquet"),
        ])
    }

    /// Where compaction keeps the logically deleted entities of a tenant's ranges: outside
    /// `current/`, which engines read whole.
    pub fn retired_prefix(entity_type: &str, tenant_id: i64) -> Path {
        Path::from_iter(["_eavlake", "retired", entity_type, &format!("tenant_id={tenant_id}")])
    }

    /// One version of a range's logically deleted entities; `token` makes every version a new
    /// object, named by the current object that goes with it.
    pub fn retired_path(entity_type: &str, tenant_id: i64, lo: i64, hi: i64, token: &str) -> Path {
        Path::from_iter([
            "_eavlake",
            "retired",
            entity_type,
            &format!("tenant_id={tenant_id}"),
            &format!("entities-{lo:012}-{hi:012}-{token}.parquet"),
        ])
    }

    pub fn dead_letter_path(stream: &str, first: i64, last: i64) -> Path {
        Path::from_iter(["dead_letters", stream, &format!("{first:012}-{last:012}.jsonl")])
    }

    /// An object of the lake's own records: `_eavlake/<name>`, `name` may have `/` folders.
    pub fn meta_path(name: &str) -> Path {
        Path::from_iter(std::iter::once("_eavlake").chain(name.split('/')))
    }

    /// Writes an object, durably, retrying transient failures.
    pub async fn put(&self, path: &Path, bytes: Bytes) -> Result<(), SinkError> {
        self.retrying("put", path, || self.store.put(path, PutPayload::from(bytes.clone()))).await.map(|_| ())
    }

    /// Reads an object; `None` if it does not exist.
    pub async fn get(&self, path: &Path) -> Result<Option<Bytes>, SinkError> {
        Ok(self.fetch(path).await?.map(|(bytes, _)| bytes))
    }

    /// Reads an object with its version, for a later [`Lake::put_if`].
    pub async fn get_versioned(&self, path: &Path) -> Result<(Option<Bytes>, Version), SinkError> {
        let Some((bytes, tag)) = self.fetch(path).await? else { return Ok((None, Version::absent())) };
        let tag =
            if self.local_root.is_some() { VersionTag::Content(content_hash(&bytes)) } else { VersionTag::Store(tag) };
        Ok((Some(bytes), Version(Some(tag))))
    }

    /// The last `len` bytes of an object (all of it when shorter) and its size; `None` if it does
    /// not exist. A suffix range needs no size known beforehand, so an object replaced since it
    /// was listed is read as it is now.
    pub async fn get_suffix(&self, path: &Path, len: u64) -> Result<Option<(Bytes, u64)>, SinkError> {
        let read = || async {
            let opts =
                object_store::GetOptions { range: Some(object_store::GetRange::Suffix(len)), ..Default::default() };
            let r = match self.store.get_opts(path, opts).await {
                Ok(r) => r,
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(e),
            };
            let size = r.meta.size;
            Ok(Some((r.bytes().await?, size)))
        };
        self.retrying("get", path, read).await
    }

    /// An object's bytes and the version the store reports; `None` if it does not exist.
    async fn fetch(&self, path: &Path) -> Result<Option<(Bytes, object_store::UpdateVersion)>, SinkError> {
        let read = || async {
            let r = match self.store.get(path).await {
                Ok(r) => r,
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(e),
            };
            let tag = object_store::UpdateVersion { e_tag: r.meta.e_tag.clone(), version: r.meta.version.clone() };
            Ok(Some((r.bytes().await?, tag)))
        };
        self.retrying("get", path, read).await
    }

    /// Writes an object only if it is still at `expected` (compare-and-swap); returns the new
    /// version, or [`SinkError::Conflict`] if another writer changed it meanwhile.
    pub async fn put_if(&self, path: &Path, bytes: Bytes, expected: &Version) -> Result<Version, SinkError> {
        if let Some(root) = &self.local_root {
            return self.put_if_local(root, path, bytes, expected).await;
        }
        let mode = match &expected.0 {
            None => object_store::PutMode::Create,
            Some(VersionTag::Store(v)) => object_store::PutMode::Update(v.clone()),
            Some(VersionTag::Content(_)) => return Err(SinkError::Conflict { path: path.to_string() }),
        };
        let opts = object_store::PutOptions { mode, ..Default::default() };
        let put = || self.store.put_opts(path, PutPayload::from(bytes.clone()), opts.clone());
        match self.retrying("put_if", path, put).await {
            Ok(r) => {
                Ok(Version(Some(VersionTag::Store(object_store::UpdateVersion { e_tag: r.e_tag, version: r.version }))))
            }
            Err(SinkError::Store {
                source: object_store::Error::Precondition { .. } | object_store::Error::AlreadyExists { .. },
                ..
            }) => Err(SinkError::Conflict { path: path.to_string() }),
            Err(e) => Err(e),
        }
    }

    /// Compare-and-swap in a local folder: read, compare and write under an exclusive lock on
    /// `_eavlake/locks/<path>.lock` (the object itself is replaced by a rename, so it cannot
    /// carry the lock).
    async fn put_if_local(
        &self,
        root: &std::path::Path,
        path: &Path,
        bytes: Bytes,
        expected: &Version,
    ) -> Result<Version, SinkError> {
        let lock_path = root.join("_eavlake").join("locks").join(format!("{}.lock", path.as_ref().replace('/', "%")));
        let io_err =
            |e: std::io::Error| SinkError::Location { url: self.url.clone(), message: format!("lock file: {e}") };
        let lock = tokio::task::spawn_blocking(move || -> std::io::Result<std::fs::File> {
            if let Some(dir) = lock_path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let f = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path)?;
            use std::os::fd::AsRawFd;
            // SAFETY: flock on a descriptor this function owns; released when the file closes.
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(f)
        })
        .await
        .map_err(|e| io_err(std::io::Error::other(e.to_string())))?
        .map_err(io_err)?;
        let (_, current) = self.get_versioned(path).await?;
        if current != *expected {
            return Err(SinkError::Conflict { path: path.to_string() });
        }
        let version = Version(Some(VersionTag::Content(content_hash(&bytes))));
        self.put(path, bytes).await?;
        drop(lock);
        Ok(version)
    }

    /// Every object under a prefix, recursively.
    pub async fn list(&self, prefix: &Path) -> Result<Vec<ObjectMeta>, SinkError> {
        self.retrying("list", prefix, || self.store.list(Some(prefix)).try_collect()).await
    }

    /// Immediate child folders of a prefix (for example the entity types under `changes/`).
    pub async fn children(&self, prefix: &Path) -> Result<Vec<String>, SinkError> {
        let listing = self.retrying("list", prefix, || self.store.list_with_delimiter(Some(prefix))).await?;
        Ok(listing.common_prefixes.iter().filter_map(|p| p.filename().map(str::to_string)).collect())
    }

    pub async fn delete(&self, path: &Path) -> Result<(), SinkError> {
        let delete = || async {
            match self.store.delete(path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(e),
            }
        };
        self.retrying("delete", path, delete).await
    }

    /// Removes the folders left empty under `prefix` (and `prefix` itself) in a local lake, so
    /// that a purged tenant leaves no `tenant_id=` folder behind; object stores have no folders.
    pub async fn remove_empty_folders(&self, prefix: &Path) -> Result<(), SinkError> {
        let Some(root) = &self.local_root else { return Ok(()) };
        let dir = prefix.parts().fold(root.clone(), |d, p| d.join(p.as_ref()));
        let url = self.url.clone();
        tokio::task::spawn_blocking(move || remove_empty_dirs(&dir))
            .await
            .map_err(|e| SinkError::Location { url: url.clone(), message: e.to_string() })?
            .map_err(|e| SinkError::Location { url, message: format!("removing empty folders under {prefix}: {e}") })
    }

    /// Runs a store operation, retrying transient failures (timeouts, 5xx, throttling) with
    /// exponential backoff: 100 ms doubling, at most 10 s apart, 8 tries.
    async fn retrying<T, F, Fut>(&self, op: &'static str, path: &Path, mut f: F) -> Result<T, SinkError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, object_store::Error>>,
    {
        let mut delay = Duration::from_millis(100);
        let mut attempt = 1;
        loop {
            match f().await {
                Ok(v) => return Ok(v),
                Err(e) if attempt < ATTEMPTS && transient(&e) => {
                    crate::metrics::prom::count_store_retry(op);
                    tracing::warn!(op, path = %path, attempt, error = %e, "object store request failed, retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                    attempt += 1;
                }
                Err(source) => return Err(SinkError::Store { op, path: path.to_string(), source }),
            }
        }
    }
}

/// Removes `dir` and its sub-folders bottom-up where they are empty; a folder with a file stays.
fn remove_empty_dirs(dir: &std::path::Path) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            remove_empty_dirs(&entry.path())?;
        }
    }
    match std::fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        // Not empty (a file another writer just put there), or already gone.
        Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty || e.kind() == std::io::ErrorKind::NotFound => {
            Ok(())
        }
        Err(e) => Err(e),
    }
}

fn content_hash(bytes: &[u8]) -> u64 {
    use std::hash::Hasher;
    let mut h = rustc_hash::FxHasher::default();
    h.write(bytes);
    h.finish()
}

/// Errors worth another try: everything but the ones a retry cannot change.
fn transient(e: &object_store::Error) -> bool {
    !matches!(
        e,
        object_store::Error::NotFound { .. }
            | object_store::Error::InvalidPath { .. }
            | object_store::Error::NotSupported { .. }
            | object_store::Error::NotImplemented
            | object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. }
            | object_store::Error::UnknownConfigurationKey { .. }
            | object_store::Error::Precondition { .. }
            | object_store::Error::AlreadyExists { .. }
            | object_store::Error::NotModified { .. }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_hive_style() {
        assert_eq!(
            Lake::changes_path("customer", 7, "2024-03-01", "x.parquet").to_string(),
            "changes/customer/tenant_id=7/date=2024-03-01/x.parquet"
        );
        assert_eq!(
            Lake::current_path("order", 3, 0, 99_999).to_string(),
            "current/order/tenant_id=3/entities-000000000000-000000099999.parquet"
        );
    }

    #[tokio::test]
    async fn local_folder_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path().join("lake").to_str().unwrap(), &S3Options::default()).unwrap();
        let p = Lake::meta_path("x.json");
        assert_eq!(lake.get(&p).await.unwrap(), None);
        lake.put(&p, Bytes::from_static(b"{}")).await.unwrap();
        assert_eq!(lake.get(&p).await.unwrap().as_deref(), Some(&b"{}"[..]));
        assert!(dir.path().join("lake/_eavlake/x.json").exists());
        assert!(Lake::open("ftp://x", &S3Options::default()).is_err());

        lake.ensure_settings(1000, 9).await.unwrap();
        lake.ensure_settings(1000, 9).await.unwrap();
        let err = lake.ensure_settings(500, 9).await.unwrap_err().to_string();
        assert!(err.ends_with("was created with lake.range_size = 1000; the configuration says 500"), "{err}");
        assert!(Lake::open("s3://", &S3Options::default()).is_err());
    }

    /// A suffix read gives the last bytes and the size, all of a shorter object, nothing for a
    /// missing one: on a folder and in memory.
    #[tokio::test]
    async fn suffix_reads() {
        let dir = tempfile::tempdir().unwrap();
        for url in [dir.path().to_str().unwrap(), "memory://"] {
            let lake = Lake::open(url, &S3Options::default()).unwrap();
            let p = Lake::meta_path("x.bin");
            assert_eq!(lake.get_suffix(&p, 4).await.unwrap(), None, "{url}");
            lake.put(&p, Bytes::from_static(b"0123456789")).await.unwrap();
            assert_eq!(lake.get_suffix(&p, 4).await.unwrap(), Some((Bytes::from_static(b"6789"), 10)), "{url}");
            assert_eq!(lake.get_suffix(&p, 64).await.unwrap(), Some((Bytes::from_static(b"0123456789"), 10)), "{url}");
        }
    }

    /// Compare-and-swap: a writer holding an old version loses, on a folder and in memory.
    #[tokio::test]
    async fn put_if_refuses_a_stale_version() {
        let dir = tempfile::tempdir().unwrap();
        for url in [dir.path().to_str().unwrap(), "memory://"] {
            let lake = Lake::open(url, &S3Options::default()).unwrap();
            let p = Lake::meta_path("progress/s.json");
            let (none, absent) = lake.get_versioned(&p).await.unwrap();
            assert_eq!((none, &absent), (None, &Version::absent()));
            let v1 = lake.put_if(&p, Bytes::from_static(b"1"), &absent).await.unwrap();
            let err = lake.put_if(&p, Bytes::from_static(b"x"), &absent).await.unwrap_err();
            assert!(matches!(err, SinkError::Conflict { .. }), "{url}: {err}");
            let (_, read) = lake.get_versioned(&p).await.unwrap();
            let v2 = lake.put_if(&p, Bytes::from_static(b"2"), &read).await.unwrap();
            assert!(matches!(lake.put_if(&p, Bytes::from_static(b"y"), &v1).await, Err(SinkError::Conflict { .. })));
            lake.put_if(&p, Bytes::from_static(b"3"), &v2).await.unwrap();
            assert_eq!(lake.get(&p).await.unwrap().as_deref(), Some(&b"3"[..]));
        }
    }
}
