//! The catalog's file, as redb sees it: redb's own file backend, plus a
//! flag raised by any failed I/O. redb latches an I/O error (every later
//! transaction fails with "Previous I/O error") until the database is
//! reopened; the flag tells [`super::Catalog`] to reopen it before the next
//! transaction, so one ENOSPC does not fail every commit until a restart.
//! Writes and fsyncs pass the fail point `catalog.write`.

use std::fs::File;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};

#[derive(Debug)]
pub(super) struct WatchedBackend {
    inner: FileBackend,
    faulted: Arc<AtomicBool>,
}

impl WatchedBackend {
    pub(super) fn new(file: File, faulted: Arc<AtomicBool>) -> Result<Self, redb::DatabaseError> {
        Ok(WatchedBackend {
            inner: FileBackend::new(file)?,
            faulted,
        })
    }

    fn watch<T>(&self, result: std::io::Result<T>) -> std::io::Result<T> {
        if result.is_err() {
            self.faulted.store(true, Ordering::Release);
        }
        result
    }
}

impl StorageBackend for WatchedBackend {
    fn len(&self) -> std::io::Result<u64> {
        self.watch(self.inner.len())
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.watch(self.inner.read(offset, out))
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        let result = crate::fail::io("catalog.write").and_then(|()| self.inner.set_len(len));
        self.watch(result)
    }

    fn sync_data(&self) -> std::io::Result<()> {
        let result = crate::fail::io("catalog.write").and_then(|()| self.inner.sync_data());
        self.watch(result)
    }

    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        let result = crate::fail::io("catalog.write").and_then(|()| self.inner.write(offset, data));
        self.watch(result)
    }

    fn close(&self) -> std::io::Result<()> {
        self.inner.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(start, end)
    }
}
