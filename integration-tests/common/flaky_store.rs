//! An in-memory object store that fails on demand, to test what the worker does when the lake's
//! store misbehaves: every `fail_every`-th write fails with a transient error (retried), and
//! while `down` is set every write fails for good.
#![allow(dead_code)]

use futures::stream::BoxStream;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions, PutOptions,
    PutPayload, PutResult, Result,
};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

#[derive(Debug, Default)]
pub struct FlakyStore {
    pub inner: InMemory,
    pub fail_every: AtomicU64,
    pub down: AtomicBool,
    pub writes: AtomicU64,
    pub injected: AtomicU64,
}

impl std::fmt::Display for FlakyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FlakyStore")
    }
}

impl FlakyStore {
    fn check(&self, location: &Path) -> Result<()> {
        let n = self.writes.fetch_add(1, Ordering::SeqCst) + 1;
        if self.down.load(Ordering::SeqCst) {
            return Err(object_store::Error::PermissionDenied {
                path: location.to_string(),
                source: "the store is down (test)".into(),
            });
        }
        let every = self.fail_every.load(Ordering::SeqCst);
        if every > 0 && n.is_multiple_of(every) {
            self.injected.fetch_add(1, Ordering::SeqCst);
            return Err(object_store::Error::Generic { store: "flaky", source: "503 Slow Down (test)".into() });
        }
        Ok(())
    }

    /// Copies every object into a local folder, to read the lake back with the file helpers.
    pub async fn copy_to(&self, dir: &std::path::Path) {
        use futures::TryStreamExt;
        let all: Vec<ObjectMeta> = self.inner.list(None).try_collect().await.unwrap();
        for meta in all {
            let bytes = match self.inner.get(&meta.location).await {
                Ok(got) => got.bytes().await.unwrap(),
                // Deleted since the listing: a worker claiming a stream removes its predecessor's
                // unfinished flush, whose objects were never part of the lake.
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => panic!("reading {} back: {e}", meta.location),
            };
            let path = dir.join(meta.location.as_ref());
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, bytes).unwrap();
        }
    }
}

#[async_trait::async_trait]
impl ObjectStore for FlakyStore {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        self.check(location)?;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        self.check(location)?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn delete(&self, location: &Path) -> Result<()> {
        self.check(location)?;
        self.inner.delete(location).await
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy(&self, from: &Path, to: &Path) -> Result<()> {
        self.check(to)?;
        self.inner.copy(from, to).await
    }

    async fn copy_if_not_exists(&self, from: &Path, to: &Path) -> Result<()> {
        self.check(to)?;
        self.inner.copy_if_not_exists(from, to).await
    }
}

pub fn flaky() -> Arc<FlakyStore> {
    Arc::new(FlakyStore::default())
}
