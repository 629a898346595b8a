//! Per-thread buffers of formatted lines, collected by a writer thread.
//!
//! A request record is written on the thread that finished the exchange, as
//! often as requests come. Handing a copy of it to the writer through a
//! channel cost that thread more than formatting it: the record was copied
//! twice, into channel slots that had gone cold in the cache since the writer
//! last emptied them. So the thread formats the line itself, into a buffer
//! of its own that stays warm, and the writer takes the whole buffer every
//! tick, swapping in an empty one (a constant-time swap under a lock the two
//! threads otherwise never contend for).

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::addrs::AddrCache;
use super::clock::WallClock;
use super::inplace::LineBuf;
use super::record::TimeFormat;

/// One thread's lines not yet taken.
#[derive(Default)]
pub(super) struct ThreadLines {
    /// Formatted lines, each ending in `\n`.
    pub buf: LineBuf,
    /// Lines in `buf`.
    pub lines: u64,
    /// The clocks, read when the buffer was empty: once per batch.
    wall: Option<WallClock>,
    /// Dates the lines, formatting each second once.
    time: TimeFormat,
    /// Recent peers' addresses, formatted.
    addrs: AddrCache,
}

/// What a thread's line is formatted with: the buffer, and the clocks and
/// date cache to date it.
pub(super) struct LineWriter<'a> {
    /// Where the line goes, with its `\n`.
    pub buf: &'a mut LineBuf,
    /// The clocks.
    pub wall: &'a WallClock,
    /// The date cache.
    pub time: &'a mut TimeFormat,
    /// The address cache.
    pub addrs: &'a mut AddrCache,
}

type Slot = Arc<Mutex<ThreadLines>>;

/// The line buffers of one writer, one per thread that wrote a line.
pub(super) struct LineBuffers {
    id: u64,
    /// Most lines a thread's buffer holds before more are dropped.
    cap: u64,
    slots: Mutex<Vec<Slot>>,
    /// The writer is waiting on its channel, not looking every tick: the
    /// first line into an empty buffer must wake it.
    pub idle: AtomicBool,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// This thread's buffer for each writer it wrote to (usually one): a
    /// line costs a short search and an uncontended lock, no allocation.
    /// The only thread-local of the log writer.
    static MINE: RefCell<Vec<(u64, Slot)>> = const { RefCell::new(Vec::new()) };
}

fn lock(slot: &Mutex<ThreadLines>) -> MutexGuard<'_, ThreadLines> {
    slot.lock().unwrap_or_else(|e| e.into_inner())
}

impl LineBuffers {
    /// Buffers holding at most `cap` lines per thread.
    pub(super) fn new(cap: u64) -> Self {
        LineBuffers {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            cap: cap.max(1),
            slots: Mutex::new(Vec::new()),
            idle: AtomicBool::new(false),
        }
    }

    /// Formats one line with `write` into this thread's buffer. Returns
    /// `None` when the buffer is full (the line is dropped; the caller counts
    /// it), else whether the buffer was empty before.
    pub(super) fn append(&self, write: impl FnOnce(LineWriter<'_>)) -> Option<bool> {
        let mut write = Some(write);
        let mut run = |slot: &Slot| {
            let mut guard = lock(slot);
            let t = &mut *guard;
            if t.lines >= self.cap {
                return None;
            }
            let was_empty = t.lines == 0;
            let wall = match t.wall {
                Some(wall) if !was_empty => wall,
                _ => *t.wall.insert(WallClock::now()),
            };
            if let Some(write) = write.take() {
                write(LineWriter {
                    buf: &mut t.buf,
                    wall: &wall,
                    time: &mut t.time,
                    addrs: &mut t.addrs,
                });
            }
            t.lines += 1;
            Some(was_empty)
        };
        let found = MINE.try_with(|mine| {
            let mut mine = mine.try_borrow_mut().ok()?;
            if let Some((_, slot)) = mine.iter().find(|(id, _)| *id == self.id) {
                return Some(run(slot));
            }
            // Buffers of writers that are gone go first.
            mine.retain(|(_, slot)| Arc::strong_count(slot) > 1);
            let slot = self.register();
            let res = run(&slot);
            mine.push((self.id, slot));
            Some(res)
        });
        match found {
            Ok(Some(res)) => res,
            // No thread-local (the thread is exiting) or re-entered from
            // inside `write`: a buffer of its own, registered for the writer.
            _ => run(&self.register()),
        }
    }

    fn register(&self) -> Slot {
        let slot: Slot = Arc::default();
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.push(slot.clone());
        slot
    }

    /// Takes every thread's lines, handing each thread's bytes and count to
    /// `each` (`spare` is the empty buffer handed to the next thread, and
    /// comes back as the one taken, emptied). Returns how many lines were
    /// taken.
    pub(super) fn take(&self, spare: &mut LineBuf, mut each: impl FnMut(&[u8], u64)) -> u64 {
        let slots: Vec<Slot> = {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            // Threads that are gone, their lines taken, are forgotten.
            slots.retain(|s| Arc::strong_count(s) > 1 || lock(s).lines > 0);
            slots.clone()
        };
        let mut taken = 0;
        for slot in &slots {
            let lines = {
                let mut t = lock(slot);
                if t.lines == 0 {
                    continue;
                }
                spare.clear();
                std::mem::swap(&mut t.buf, spare);
                std::mem::take(&mut t.lines)
            };
            each(spare.as_bytes(), lines);
            taken += lines;
        }
        spare.clear();
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(b: &LineBuffers, text: &str) -> Option<bool> {
        b.append(|w| {
            let line = format!("{text}\n");
            let spare = w.buf.spare(line.len());
            spare[..line.len()].copy_from_slice(line.as_bytes());
            w.buf.commit(line.len());
        })
    }

    fn take(b: &LineBuffers, spare: &mut LineBuf) -> (u64, Vec<u8>) {
        let mut out = Vec::new();
        let n = b.take(spare, |bytes, _| out.extend_from_slice(bytes));
        (n, out)
    }

    #[test]
    fn lines_of_several_threads_are_taken_whole_and_bounded() {
        let b = Arc::new(LineBuffers::new(3));
        assert_eq!(line(&b, "a"), Some(true));
        assert_eq!(line(&b, "b"), Some(false));
        let other = b.clone();
        std::thread::spawn(move || {
            for t in ["x", "y", "z", "dropped"] {
                line(&other, t);
            }
        })
        .join()
        .unwrap();
        let mut spare = LineBuf::default();
        let (n, out) = take(&b, &mut spare);
        assert_eq!(n, 5);
        assert_eq!(String::from_utf8(out).unwrap(), "a\nb\nx\ny\nz\n");
        assert_eq!(line(&b, "c"), Some(true));
        assert_eq!(take(&b, &mut spare), (1, b"c\n".to_vec()));
        // The exited thread's buffer, emptied, is forgotten.
        assert_eq!(b.slots.lock().unwrap().len(), 1);
    }

    #[test]
    fn a_full_buffer_drops_until_taken() {
        let b = LineBuffers::new(1);
        assert_eq!(line(&b, "1"), Some(true));
        assert_eq!(line(&b, "2"), None);
        assert_eq!(take(&b, &mut LineBuf::default()).0, 1);
        assert_eq!(line(&b, "3"), Some(true));
    }
}
