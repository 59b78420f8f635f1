//! A hint to the CPU to start loading a cache line before it is used, where the hardware
//! prefetcher cannot guess the next address: a hash table slot, the next page of a mapped file.

/// Starts loading the cache line that holds `value`. A hint: it changes nothing the program
/// computes, and does nothing on other architectures than x86-64.
#[inline(always)]
pub(crate) fn prefetch<T: ?Sized>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the address comes from a reference, so it is valid; a prefetch reads nothing the
    // program sees and never faults.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>((value as *const T).cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}
