//! Per-thread shards, so counting touches no cache line another thread writes.
//!
//! A counter every poller bumps on every request is one contended cache line:
//! each `fetch_add` waits for the line to come over from the core that wrote
//! it last. Instead, a sharded value keeps [`SHARDS`] copies, each on cache
//! lines of its own; a thread takes a shard index once (round-robin, in a
//! thread-local) and only ever adds to that shard, with relaxed atomics. A
//! reader (a `/metrics` scrape) sums the shards.
//!
//! The index is per thread, not per poller: this module knows nothing of
//! pollers, and handler threads count too. With more threads than shards, two
//! threads share one: still correct (the adds are atomic), only no longer
//! free of contention.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

/// How many copies a sharded value keeps: enough for the pollers and handler
/// threads of a mid-sized machine, few enough that a histogram's copies stay
/// small (see `docs/architecture.md`).
pub(super) const SHARDS: usize = 16;

/// The next shard index to hand out.
static NEXT: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's shard index; `usize::MAX` until it is first needed.
    static INDEX: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// This thread's shard index, below [`SHARDS`]: taken round-robin the first
/// time a thread asks. A thread whose thread-locals are already gone (a
/// destructor running at thread exit) gets 0.
pub(super) fn index() -> usize {
    INDEX
        .try_with(|c| {
            let i = c.get();
            if i < SHARDS {
                return i;
            }
            let i = NEXT.fetch_add(1, Relaxed) % SHARDS;
            c.set(i);
            i
        })
        .unwrap_or(0)
}

/// One shard's value, alone on its cache lines (128 bytes: adjacent-line
/// prefetch pairs 64-byte lines, so 64 would still let neighbours interfere).
#[derive(Debug, Default)]
#[repr(align(128))]
pub(super) struct Padded<T>(pub(super) T);

/// [`SHARDS`] copies of `T`, each on its own cache lines.
#[derive(Debug)]
pub(super) struct Sharded<T> {
    shards: Box<[Padded<T>; SHARDS]>,
}

impl<T: Default> Default for Sharded<T> {
    fn default() -> Self {
        // Built on the heap, not moved there: a histogram's shards are 14 KiB.
        let shards: Box<[Padded<T>]> = (0..SHARDS).map(|_| Padded::default()).collect();
        let shards = shards
            .try_into()
            // SHARDS items were collected, so this is never taken.
            .unwrap_or_else(|_| Box::new(std::array::from_fn(|_| Padded::default())));
        Sharded { shards }
    }
}

impl<T> Sharded<T> {
    /// This thread's copy.
    pub(super) fn local(&self) -> &T {
        // `index()` is below `SHARDS` already; the mask spares a bounds check.
        &self.shards[index() % SHARDS].0
    }

    /// Every copy, to sum them.
    pub(super) fn iter(&self) -> impl Iterator<Item = &T> {
        self.shards.iter().map(|p| &p.0)
    }

    /// The sum over every copy of the counter `field` picks.
    pub(super) fn sum(&self, field: impl Fn(&T) -> &AtomicU64) -> u64 {
        self.iter()
            .fold(0u64, |a, s| a.wrapping_add(field(s).load(Relaxed)))
    }
}

/// Adds `v` to `counter` unless it is zero (saving a write to a line that may
/// otherwise stay clean).
pub(super) fn add(counter: &AtomicU64, v: u64) {
    if v != 0 {
        counter.fetch_add(v, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_thread_keeps_its_index_and_threads_spread() {
        let mine = index();
        assert!(mine < SHARDS);
        assert_eq!(index(), mine);
        let others: Vec<usize> = (0..SHARDS)
            .map(|_| std::thread::spawn(index).join().unwrap())
            .collect();
        assert!(others.iter().all(|&i| i < SHARDS));
        // Handed out round-robin: SHARDS threads in a row get distinct
        // indexes, unless other tests' threads took some in between.
        let mut distinct = others.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert!(distinct.len() > 1, "{others:?}");
    }

    #[test]
    fn shards_are_apart_and_sum() {
        assert_eq!(std::mem::align_of::<Padded<AtomicU64>>(), 128);
        let s: Arc<Sharded<AtomicU64>> = Arc::default();
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let s = s.clone();
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        s.local().fetch_add(1, Relaxed);
                    }
                    add(s.local(), 0);
                    add(s.local(), 5);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(s.sum(|c| c), 80_040);
        // More than one shard was used.
        assert!(s.iter().filter(|c| c.load(Relaxed) > 0).count() > 1);
    }
}
