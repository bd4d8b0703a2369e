//! Gives memory the allocator keeps after a commit back to the system. glibc keeps freed chunks
//! in its arenas: a large change (a farm of 60,000 backends parsed from JSON, rendered, diffed)
//! frees several times what stays live, and without a trim the daemon's resident size stays at
//! the peak of its largest change.

/// Returns the free pages of every malloc arena to the system (glibc; a no-op elsewhere).
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointers and only reads and changes the allocator's own state
    // under its arena locks, so it may be called from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}
