//! Byte buffers reused per thread for message heads and header arenas.
//!
//! Every request copies its head out of the read buffer, and most responses
//! build a few header fields: two allocations per exchange that live exactly
//! as long as the exchange. Keeping the freed buffers in a small per-thread
//! list turns both into a pop and a push, with no lock or atomic. Large
//! buffers are not kept, so the pool holds at most `KEEP * MAX_KEPT_CAPACITY`
//! bytes per thread.

use std::cell::RefCell;

/// Buffers kept per thread.
const KEEP: usize = 64;
/// Buffers larger than this are freed rather than kept.
pub(crate) const MAX_KEPT_CAPACITY: usize = 4096;
/// The smallest buffer handed out, enough for a typical head or arena.
const MIN_CAPACITY: usize = 256;

thread_local! {
    static POOL: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// An empty buffer with room for at least `min` bytes.
pub(crate) fn take(min: usize) -> Vec<u8> {
    let reused = POOL
        .try_with(|pool| pool.try_borrow_mut().ok().and_then(|mut p| p.pop()))
        .ok()
        .flatten();
    match reused {
        Some(mut buf) => {
            buf.reserve(min);
            buf
        }
        None => Vec::with_capacity(min.max(MIN_CAPACITY)),
    }
}

/// Gives `buf` back for reuse (or frees it).
#[inline]
pub(crate) fn give(buf: Vec<u8>) {
    // Most calls pass an empty `Vec::new()`: no call for those.
    if buf.capacity() != 0 {
        keep(buf);
    }
}

fn keep(mut buf: Vec<u8>) {
    if buf.capacity() > MAX_KEPT_CAPACITY {
        return;
    }
    buf.clear();
    let _ = POOL.try_with(|pool| {
        if let Ok(mut pool) = pool.try_borrow_mut() {
            if pool.len() < KEEP {
                pool.push(buf);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_empty_and_big_ones_are_not_kept() {
        let mut a = take(10);
        a.extend_from_slice(b"GET / HTTP/1.1\r\n\r\nmore");
        let ptr = a.as_ptr();
        give(a);
        let b = take(10);
        assert!(b.is_empty());
        assert_eq!(b.as_ptr(), ptr, "the buffer was reused");
        give(b);
        give(Vec::with_capacity(MAX_KEPT_CAPACITY + 1));
        let c = take(1);
        assert!(c.capacity() <= MAX_KEPT_CAPACITY);
    }
}
