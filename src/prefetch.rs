//! A cache prefetch hint: one of the two `unsafe` calls outside `journal/mmap.rs` (the other
//! is the CRC-32C instruction in `journal/checksum.rs`), fenced in here.
#![cfg_attr(
    target_arch = "x86_64",
    expect(
        unsafe_code,
        reason = "the prefetch intrinsic is an unsafe function, though it never touches memory"
    )
)]

/// Asks the CPU to bring the cache line holding `ptr` into its caches, so that a load or store
/// to it soon after does not wait for memory. Only a hint: it never faults, whatever `ptr` is,
/// and changes nothing the program can observe. Does nothing off x86-64.
#[inline(always)]
pub(crate) fn prefetch<T>(ptr: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `prefetcht0` reads no memory the program can observe and never faults, even on
    // an address that is not mapped; x86-64 always has it (SSE).
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(ptr.cast::<i8>())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = ptr;
}
