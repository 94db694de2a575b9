//! Giving freed heap memory back to the operating system.
//!
//! A full scan that reads many jobs (the first one, or the first after a reload, which forgets
//! every remembered decision) allocates and frees megabytes of job data across the runtime's
//! worker threads. glibc keeps what a thread's arena freed for that thread's later use and
//! returns it to the system only when asked, so without this RSS steps up by the largest such
//! scan and stays there, which reads like a leak to an operator watching the daemon for weeks
//! (the soak of issue 11 measured +1–3 MiB per reload, then a plateau).

/// Asks the allocator to return the free memory at the top of every arena (`malloc_trim(0)`).
/// Cheap next to a scan: it walks the arenas' free lists, not the live data. A no-op where the
/// allocator is not glibc's.
pub fn give_back() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases memory the allocator holds as free; it takes no pointers
    // and is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}
