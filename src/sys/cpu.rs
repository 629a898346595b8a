//! CPU-level helpers: a cache prefetch hint and the coarse real-time clock.

/// Asks the CPU to bring the cache line holding `p` into its caches: a hint
/// that lets a cache miss overlap other work. It never faults and has no
/// visible effect, so any pointer will do, dangling or not.
#[inline(always)]
pub(crate) fn prefetch<T: ?Sized>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 only hints the cache: it does not fault, even on an
    // invalid address, and changes no memory or register the program can see.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Whole seconds since the Unix epoch from the coarse real-time clock: a read
/// of the vDSO's last tick, with no timer access, for values such as the
/// `Date` header that need only the second. It may lag the precise clock by
/// one scheduler tick.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) fn coarse_unix_secs() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is valid and writable for the call; the clock id is a constant
    // this platform defines.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) };
    if rc != 0 {
        return precise_unix_secs();
    }
    u64::try_from(ts.tv_sec).unwrap_or(0)
}

/// Whole seconds since the Unix epoch (no coarse clock on this platform).
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) fn coarse_unix_secs() -> u64 {
    precise_unix_secs()
}

fn precise_unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
