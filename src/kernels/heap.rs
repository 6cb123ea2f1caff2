//! Keeps freed heap memory for the next run (glibc), the way an inference arena does.
//!
//! The executor allocates each step's output and frees it after its last reader. With
//! glibc's defaults, blocks of 128 KiB and more are mmap'ed and unmapped at every free,
//! and the top of the heap is trimmed back to the OS once more than 2× that is free. So a
//! batched run faulted its intermediate pages in afresh each time: transformer_layer at
//! batch 64 took ~190 page faults per run, a quarter of its time. Raising both thresholds
//! once per process makes the blocks come back from the heap already mapped; peak RSS is
//! unchanged (the memory was in use at the peak anyway), but it is not returned between
//! runs. Blocks over 32 MiB (glibc's largest mmap threshold) are still mapped on demand.
//! Other C libraries: nothing is done.

use std::sync::Once;

/// Free heap memory kept before the top is returned to the OS.
const TRIM_THRESHOLD: usize = 256 << 20;
/// Blocks up to this size come from the heap (glibc's maximum on 64-bit).
const MMAP_THRESHOLD: usize = 32 << 20;

/// Applies the tuning once per process (the executor calls it when it plans a model).
pub fn retain_freed_memory() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        {
            // SAFETY: mallopt only sets two allocator parameters; it is thread-safe in glibc.
            let ok = unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int) == 1
                    && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD as libc::c_int) == 1
            };
            if !ok {
                log::debug!("mallopt refused the heap thresholds; glibc's defaults stay");
            }
        }
        let _ = (TRIM_THRESHOLD, MMAP_THRESHOLD);
    });
}
