//! Deadlines for a poller: connection timeouts and timer tasks.
//!
//! Connection timeouts come in a few fixed durations (a server's keep-alive,
//! receive and send timeouts). Deadlines armed with the same duration expire in
//! the order they were armed, so each duration gets a FIFO queue and arming,
//! re-arming and disarming are O(1) list operations on links stored per token:
//! no allocation per request, 24 bytes per connection. The head of a keep-alive
//! queue is also the oldest idle connection, which is what `max_connections`
//! evicts first. Timer tasks have arbitrary durations and live in a `BTreeMap`
//! (O(log n) insert and cancel).
//!
//! A busy keep-alive connection re-arms its deadline on every request. So that
//! most re-arms cost nothing, a queue of 64 ms or more rounds its deadlines up
//! to a granule of 1/64 of its duration (at most a second): a re-arm that lands
//! in the granule the deadline is already in leaves it where it is. A deadline
//! then never fires early and at most one granule late, and queue order (the
//! eviction order) is the order of last activity to within a granule.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::time::{Duration, Instant};

const NIL: u32 = u32::MAX;

/// Identifies a queue: a duration, the group it serves and what kind of wait
/// it is. A server has a group of its own, so that its idle connections can be
/// found in age order even when two of its timeouts are equal; everything that
/// never asks for the oldest (client connections) uses group 0, so the number
/// of queues depends on the distinct timeouts in use, not on how many configs
/// or pools carry them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct QueueKey {
    pub dur: Duration,
    pub group: u32,
    pub kind: u8,
}

#[derive(Debug, Clone, Copy)]
struct Link {
    prev: u32,
    next: u32,
    queue: u32,
    deadline_ms: u64,
}

const UNLINKED: Link = Link {
    prev: NIL,
    next: NIL,
    queue: NIL,
    deadline_ms: 0,
};

#[derive(Debug)]
struct Queue {
    key: QueueKey,
    /// `key.dur` in whole milliseconds, rounded up.
    dur_ms: u64,
    /// Deadlines are rounded up to a multiple of this (1: exact).
    granule_ms: u64,
    head: u32,
    tail: u32,
}

/// FIFO timeout queues indexed by token, plus the timer map.
pub(crate) struct Deadlines {
    epoch: Instant,
    links: Vec<Link>,
    queues: Vec<Queue>,
    /// Where each key's queue is in `queues`.
    index: HashMap<QueueKey, u32, BuildHasherDefault<KeyHasher>>,
    timers: BTreeMap<(Instant, u64), TimerFn>,
    timer_seq: u64,
    /// The last instant converted to milliseconds, and the result: a poller
    /// turn arms many deadlines with the same `now`.
    memo: (Instant, u64),
}

/// A multiply-rotate hash for the few, trusted queue keys: a client
/// connection changes queues (receive, idle) on every request, and SipHash
/// cost more than the rest of arming a deadline.
#[derive(Default)]
pub(crate) struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }
    fn write_u8(&mut self, n: u8) {
        self.write_u64(u64::from(n));
    }
}

/// What runs on the poller thread when a timer fires (`false`) or is
/// cancelled (`true`).
pub(crate) type TimerFn = Box<dyn FnOnce(&mut super::Core, bool) + Send>;

/// A handle to cancel a timer on its poller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimerKey(Instant, u64);

/// Whether `exact` rounded up to a multiple of `granule` is `deadline` (itself
/// a multiple of `granule`), without the division that rounding takes.
fn rounds_to(exact: u64, deadline: u64, granule: u64) -> bool {
    exact <= deadline && exact + granule > deadline
}

impl Deadlines {
    pub fn new() -> Self {
        let now = Instant::now();
        Deadlines {
            epoch: now,
            links: Vec::new(),
            queues: Vec::new(),
            index: HashMap::default(),
            timers: BTreeMap::new(),
            timer_seq: 0,
            memo: (now, 0),
        }
    }

    fn ms(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.epoch).as_millis() as u64
    }

    /// [`ms`](Self::ms) of `now`, remembered for the next call with the same `now`.
    fn now_ms(&mut self, now: Instant) -> u64 {
        if self.memo.0 != now {
            self.memo = (now, self.ms(now));
        }
        self.memo.1
    }

    fn queue_index(&mut self, key: QueueKey) -> u32 {
        if let Some(&i) = self.index.get(&key) {
            return i;
        }
        let dur_ms =
            key.dur.as_millis() as u64 + u64::from(key.dur.subsec_nanos() % 1_000_000 != 0);
        self.queues.push(Queue {
            key,
            dur_ms,
            granule_ms: (dur_ms / 64).clamp(1, 1000),
            head: NIL,
            tail: NIL,
        });
        let i = (self.queues.len() - 1) as u32;
        self.index.insert(key, i);
        i
    }

    /// Arms (or re-arms) `token`'s single deadline at `now + key.dur`,
    /// rounded up to the queue's granule.
    pub fn arm(&mut self, token: usize, key: QueueKey, now: Instant) {
        let link = self.links.get(token).copied().unwrap_or(UNLINKED);
        // A re-arm is most often in the queue the token is in already.
        let q = match self.queues.get(link.queue as usize) {
            Some(queue) if queue.key == key => link.queue,
            _ => self.queue_index(key),
        };
        let queue = &self.queues[q as usize];
        let (dur_ms, granule_ms) = (queue.dur_ms, queue.granule_ms);
        let exact_ms = self.now_ms(now) + dur_ms;
        if link.queue == q && granule_ms > 1 && rounds_to(exact_ms, link.deadline_ms, granule_ms) {
            return;
        }
        let deadline_ms = exact_ms.next_multiple_of(granule_ms);
        self.disarm(token);
        if token >= self.links.len() {
            self.links.resize(token + 1, UNLINKED);
        }
        let t = token as u32;
        let queue = &mut self.queues[q as usize];
        let prev = queue.tail;
        queue.tail = t;
        if queue.head == NIL {
            queue.head = t;
        }
        self.links[token] = Link {
            prev,
            next: NIL,
            queue: q,
            deadline_ms,
        };
        if prev != NIL {
            self.links[prev as usize].next = t;
        }
    }

    /// Prefetches `token`'s link, which a re-arm will read.
    pub fn prefetch_link(&self, token: usize) {
        if let Some(link) = self.links.get(token) {
            crate::sys::cpu::prefetch(link);
        }
    }

    /// Removes `token`'s deadline, if any.
    pub fn disarm(&mut self, token: usize) {
        let Some(link) = self.links.get(token).copied() else {
            return;
        };
        if link.queue == NIL {
            return;
        }
        let queue = &mut self.queues[link.queue as usize];
        if link.prev == NIL {
            queue.head = link.next;
        } else {
            self.links[link.prev as usize].next = link.next;
        }
        if link.next == NIL {
            queue.tail = link.prev;
        } else {
            self.links[link.next as usize].prev = link.prev;
        }
        self.links[token] = UNLINKED;
    }

    /// The oldest token in the queue for `key`, if any.
    pub fn oldest(&self, key: QueueKey) -> Option<usize> {
        let q = self.queues.get(*self.index.get(&key)? as usize)?;
        (q.head != NIL).then_some(q.head as usize)
    }

    /// Pops every connection deadline that has passed, appending the tokens.
    pub fn expired(&mut self, now: Instant, out: &mut Vec<usize>) {
        let now_ms = self.ms(now);
        for qi in 0..self.queues.len() {
            loop {
                let head = self.queues[qi].head;
                if head == NIL || self.links[head as usize].deadline_ms > now_ms {
                    break;
                }
                self.disarm(head as usize);
                out.push(head as usize);
            }
        }
    }

    /// Adds a timer; `f(false)` runs when it fires.
    pub fn add_timer(&mut self, at: Instant, f: TimerFn) -> TimerKey {
        self.timer_seq += 1;
        let key = (at, self.timer_seq);
        self.timers.insert(key, f);
        TimerKey(key.0, key.1)
    }

    /// Removes a timer that has not fired yet, returning its function.
    pub fn cancel_timer(&mut self, key: TimerKey) -> Option<TimerFn> {
        self.timers.remove(&(key.0, key.1))
    }

    /// Removes the next due timer, if one is due.
    pub fn pop_due_timer(&mut self, now: Instant) -> Option<TimerFn> {
        let (&(at, _), _) = self.timers.first_key_value()?;
        if at > now {
            return None;
        }
        self.timers.pop_first().map(|(_, f)| f)
    }

    /// Time until the nearest deadline of either kind.
    pub fn next_timeout(&self, now: Instant) -> Option<Duration> {
        let conn = self
            .queues
            .iter()
            .filter(|q| q.head != NIL)
            .map(|q| self.links[q.head as usize].deadline_ms)
            .min()
            .map(|ms| {
                // Round up so we never wake a millisecond early and spin.
                (self.epoch + Duration::from_millis(ms + 1)).saturating_duration_since(now)
            });
        let timer = self
            .timers
            .first_key_value()
            .map(|(&(at, _), _)| at.saturating_duration_since(now));
        match (conn, timer) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether nothing is armed at all.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.timers.is_empty() && self.queues.iter().all(|q| q.head == NIL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_per_duration_and_disarm() {
        let mut d = Deadlines::new();
        let k = QueueKey {
            dur: Duration::from_millis(10),
            group: 1,
            kind: 0,
        };
        let t0 = Instant::now();
        d.arm(3, k, t0);
        d.arm(1, k, t0);
        d.arm(7, k, t0);
        assert_eq!(d.oldest(k), Some(3));
        d.disarm(1);
        d.arm(3, k, t0); // re-arm moves to the back
        assert_eq!(d.oldest(k), Some(7));
        let mut out = Vec::new();
        d.expired(t0 + Duration::from_millis(5), &mut out);
        assert!(out.is_empty());
        d.expired(t0 + Duration::from_millis(20), &mut out);
        assert_eq!(out, vec![7, 3]);
        assert!(d.is_empty());
    }

    #[test]
    fn rounds_to_agrees_with_rounding_up() {
        for granule in [1u64, 2, 3, 100, 937] {
            for deadline in (0..4).map(|k| k * granule) {
                for exact in 0..5 * granule {
                    assert_eq!(
                        rounds_to(exact, deadline, granule),
                        exact.next_multiple_of(granule) == deadline,
                        "{exact} {deadline} {granule}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_re_arm_within_the_granule_keeps_its_place() {
        let mut d = Deadlines::new();
        let k = QueueKey {
            dur: Duration::from_millis(6400), // a 100 ms granule
            group: 1,
            kind: 0,
        };
        let ms = Duration::from_millis;
        // Deadlines from t0 + 0..99 ms round up to the same granule (t0 + 6499 ms).
        let t0 = d.epoch + ms(1001);
        d.arm(1, k, t0);
        d.arm(2, k, t0);
        d.arm(3, k, t0 + ms(10));
        d.arm(1, k, t0 + ms(50)); // same granule: stays first
        assert_eq!(d.oldest(k), Some(1));
        d.arm(2, k, t0 + ms(150)); // the next granule: moves to the back
        assert_eq!(d.oldest(k), Some(1));
        let mut out = Vec::new();
        d.expired(t0 + ms(6498), &mut out);
        assert!(out.is_empty(), "never early");
        d.expired(t0 + ms(6499), &mut out);
        assert_eq!(out, vec![1, 3], "at most a granule late");
        d.expired(t0 + ms(6599), &mut out);
        assert_eq!(out, vec![1, 3, 2]);
        assert!(d.is_empty());
    }

    #[test]
    fn timers_fire_in_order_and_cancel() {
        let mut d = Deadlines::new();
        let t0 = Instant::now();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mk = |n: u32| -> TimerFn {
            let log = log.clone();
            Box::new(move |_, c| log.lock().unwrap().push((n, c)))
        };
        d.add_timer(t0 + Duration::from_millis(30), mk(3));
        let k = d.add_timer(t0 + Duration::from_millis(20), mk(2));
        d.add_timer(t0 + Duration::from_millis(10), mk(1));
        let cancelled = d.cancel_timer(k).unwrap();
        let mut due = Vec::new();
        while let Some(f) = d.pop_due_timer(t0 + Duration::from_millis(40)) {
            due.push(f);
        }
        let mut core = super::super::Core::for_test();
        cancelled(&mut core, true);
        for f in due {
            f(&mut core, false);
        }
        assert_eq!(
            *log.lock().unwrap(),
            vec![(2, true), (1, false), (3, false)]
        );
    }
}
