//! Patched in by eavlake: a small process-wide pool of compression and decompression contexts.
//!
//! Creating a zstd context runs the `cpuid` instruction three times (to choose the BMI2 code
//! paths); in a virtual machine each one is a trap of several microseconds. parquet-rs creates a
//! compressor and a decompressor for every column chunk it writes or reads, so on small files the
//! creation cost a twentieth of eavlake's CPU. A context given back here is first reset to its
//! initial parameters and without a dictionary (`ZSTD_reset_session_and_parameters`), which is
//! what a new context is; it keeps only its allocated workspace, and the pool keeps at most
//! [`BUDGET`] bytes of them in all.

use core::ptr::NonNull;
use zstd_sys::{ZSTD_CCtx, ZSTD_DCtx};

#[cfg(all(feature = "std", not(feature = "with-rust-allocator")))]
mod imp {
    use super::*;
    use std::sync::Mutex;
    use std::vec::Vec;

    /// Bytes of contexts kept, per kind. parquet-rs holds a compressor per column while it
    /// writes a file (a change file has ~30 columns): with 4 MiB, a 1M-event run still created
    /// 1,111 compression contexts (perf: ~1% of its CPU); with 16 MiB, 28, for 6 MiB more RSS.
    const BUDGET: usize = 16 << 20;

    struct Pool<T> {
        /// Contexts and their sizes.
        contexts: Vec<(NonNull<T>, usize)>,
        bytes: usize,
    }

    // Safety: contexts are plain heap allocations with no thread affinity (zstd-safe makes
    // `CCtx` and `DCtx` `Send` for the same reason); the pool owns those it holds.
    unsafe impl<T> Send for Pool<T> {}

    impl<T> Pool<T> {
        const fn new() -> Self {
            Pool { contexts: Vec::new(), bytes: 0 }
        }

        fn take(&mut self) -> Option<NonNull<T>> {
            let (context, size) = self.contexts.pop()?;
            self.bytes -= size;
            Some(context)
        }

        fn give(&mut self, context: NonNull<T>, size: usize) -> bool {
            if self.bytes + size > BUDGET {
                return false;
            }
            self.bytes += size;
            self.contexts.push((context, size));
            true
        }
    }

    static CCTX: Mutex<Pool<ZSTD_CCtx>> = Mutex::new(Pool::new());
    static DCTX: Mutex<Pool<ZSTD_DCtx>> = Mutex::new(Pool::new());

    pub fn take_c() -> Option<NonNull<ZSTD_CCtx>> {
        CCTX.lock().ok()?.take()
    }

    /// How many compression and decompression contexts the pool holds now.
    pub fn pooled_contexts() -> (usize, usize) {
        let c = CCTX.lock().map(|p| p.contexts.len()).unwrap_or(0);
        let d = DCTX.lock().map(|p| p.contexts.len()).unwrap_or(0);
        (c, d)
    }

    pub fn take_d() -> Option<NonNull<ZSTD_DCtx>> {
        DCTX.lock().ok()?.take()
    }

    /// Keeps `context` for reuse; false if the caller must free it.
    pub fn give_c(context: NonNull<ZSTD_CCtx>) -> bool {
        // Safety: the caller owns the context, and gives it up when this returns true.
        let (reset, size) = unsafe {
            let reset = zstd_sys::ZSTD_CCtx_reset(
                context.as_ptr(),
                zstd_sys::ZSTD_ResetDirective::ZSTD_reset_session_and_parameters,
            );
            (zstd_sys::ZSTD_isError(reset) != 0, zstd_sys::ZSTD_sizeof_CCtx(context.as_ptr()))
        };
        !reset && CCTX.lock().map(|mut p| p.give(context, size)).unwrap_or(false)
    }

    /// Keeps `context` for reuse; false if the caller must free it.
    pub fn give_d(context: NonNull<ZSTD_DCtx>) -> bool {
        // Safety: as in `give_c`.
        let (reset, size) = unsafe {
            let reset = zstd_sys::ZSTD_DCtx_reset(
                context.as_ptr(),
                zstd_sys::ZSTD_ResetDirective::ZSTD_reset_session_and_parameters,
            );
            (zstd_sys::ZSTD_isError(reset) != 0, zstd_sys::ZSTD_sizeof_DCtx(context.as_ptr()))
        };
        !reset && DCTX.lock().map(|mut p| p.give(context, size)).unwrap_or(false)
    }
}

#[cfg(not(all(feature = "std", not(feature = "with-rust-allocator"))))]
mod imp {
    use super::*;

    pub fn take_c() -> Option<NonNull<ZSTD_CCtx>> {
        None
    }

    pub fn pooled_contexts() -> (usize, usize) {
        (0, 0)
    }

    pub fn take_d() -> Option<NonNull<ZSTD_DCtx>> {
        None
    }

    pub fn give_c(_: NonNull<ZSTD_CCtx>) -> bool {
        false
    }

    pub fn give_d(_: NonNull<ZSTD_DCtx>) -> bool {
        false
    }
}

pub use imp::*;
