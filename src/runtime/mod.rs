//! The shared runtime every layer above the log stands on: open streams
//! and their lookup by name, the one way to read a stream (`read`), `sluice.errors`, and what pipelines and sinks
//! share as consumers of a stream. It imports only the storage layer
//! (`log`, `catalog`, `storage`) and the base modules; `ingest`, `cq`,
//! `sink`, `query` and the owner import it.

pub mod consumer;
pub mod dead_letters;
mod read;
mod stream;

pub use dead_letters::DeadLetter;
pub use read::{read_shard, ReadLimits, Records};
pub use stream::{Stream, Streams, ERRORS_STREAM};

/// Gives the allocator's free memory back to the system. A large COPY
/// frees hundreds of MB of batches built on several threads, and glibc
/// returns freed memory only from the top of a heap: after three 300 MB
/// COPYs into a 4-shard stream a server held 248 MB of anonymous memory,
/// 14 MB after `malloc_trim`. Trimming walks the free lists once (a few
/// ms), off the runtime's threads.
pub fn release_free_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointers; it only returns free pages of
    // the allocator's own arenas to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}
