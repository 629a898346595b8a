//! Flow control for a stream: pacing by token buckets, a bounded queue of
//! unsent messages with an overflow policy, heartbeats and stall detection.
//!
//! A stream with [`FlowControl`] does not write from the producer's thread.
//! A send only holds the message in the stream's own bounded queue (a cheap
//! enqueue, so a publisher fanning one event out to thousands of subscribers
//! never blocks on any of them); the connection's poller releases held
//! messages when the socket has taken everything before them and the rate
//! allows, as many as it may in one vectored write. Waiting for the rate is a
//! poller timer, never a sleeping thread. Because unsent messages stay whole
//! in the held queue until released, an overflow policy can drop the oldest
//! of them without ever cutting one.
//!
//! [`Pacer`] is that logic without the socket: what `conn` calls under the
//! connection's lock.

use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a flow-controlled stream does with a message that does not fit its
/// bound ([`FlowControl::max_messages`], [`FlowControl::max_bytes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overflow {
    /// The send fails with [`SendError::Full`](super::SendError::Full): the
    /// producer learns at once and decides (retry later, give up).
    Reject,
    /// The oldest unsent messages are dropped, whole, to make room; the
    /// stream's gap note (if any) tells the consumer how many before the next
    /// message, and the access log counts them in `events_dropped`.
    #[default]
    DropOldest,
    /// The connection is closed with `slow_consumer`: the consumer reconnects
    /// and catches up from wherever it keeps history, instead of getting a
    /// stream with holes. The stall timeout closes the same way.
    Disconnect,
}

/// A rate with a burst: `per_sec` units a second on average, up to `burst` at
/// once after a quiet spell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rate {
    /// Units per second (bytes or messages); at least 1.
    per_sec: u64,
    /// Units that may go at once; at least 1.
    burst: u64,
}

/// Builds the piece announcing that `n` messages were dropped (e.g. an SSE
/// comment), sent ahead of the next message.
type GapNote = Arc<dyn Fn(u64) -> Bytes + Send + Sync>;

/// Counters that several flow-controlled streams can share (say, a topic's
/// subscribers), kept as messages go out or are dropped, so they can be shown
/// live rather than when each connection closes.
#[derive(Debug, Default)]
pub struct FlowCounters {
    sent: AtomicU64,
    dropped: AtomicU64,
}

impl FlowCounters {
    /// New counters at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Messages released to the socket.
    pub fn sent(&self) -> u64 {
        self.sent.load(Relaxed)
    }

    /// Messages dropped or refused by an overflow policy.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Relaxed)
    }
}

/// Longest stall timeout or heartbeat interval (a year): longer ones are
/// taken as this, so instants computed from them cannot overflow.
const LONGEST_WAIT: Duration = Duration::from_secs(365 * 24 * 3600);

/// How a stream paces its output and treats a consumer that falls behind.
///
/// Attach it when the stream starts (`ServerTask::stream_with`). Every limit
/// has a default: no rate limit, a bound of 1,024 messages and 1 MiB held
/// unsent, [`Overflow::DropOldest`], no stall timeout, no heartbeat.
///
/// ```
/// use std::time::Duration;
/// use taskweave::comm::{FlowControl, Overflow};
///
/// // 1 MiB/s after the first 512 KiB, like nginx's `limit_rate 1m;
/// // limit_rate_after 512k;`
/// let download = FlowControl::new().byte_rate(1 << 20, 64 << 10).free_bytes(512 << 10);
/// // 10 events/s in bursts of up to 5, at most 100 waiting, oldest dropped first,
/// // and a comment line every 15 s on a silent stream.
/// let events = FlowControl::new()
///     .message_rate(10, 5)
///     .max_messages(100)
///     .overflow(Overflow::DropOldest)
///     .heartbeat(Duration::from_secs(15), ":\n\n");
/// # let _ = (download, events);
/// ```
#[derive(Clone, Default)]
pub struct FlowControl {
    /// Shared by every stream started with clones of this (a hub's
    /// subscribers), so a subscriber carries a pointer, not a copy.
    spec: Arc<FlowSpec>,
}

/// What a [`FlowControl`] says.
#[derive(Clone)]
struct FlowSpec {
    byte_rate: Option<Rate>,
    free_bytes: u64,
    message_rate: Option<Rate>,
    max_messages: usize,
    max_bytes: usize,
    overflow: Overflow,
    stall_timeout: Option<Duration>,
    heartbeat: Option<(Duration, Bytes)>,
    gap_note: Option<GapNote>,
    farewell: Option<Bytes>,
    counters: Option<Arc<FlowCounters>>,
    peer_shutdown_ends: bool,
}

impl std::fmt::Debug for FlowControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = &*self.spec;
        f.debug_struct("FlowControl")
            .field("byte_rate", &s.byte_rate)
            .field("free_bytes", &s.free_bytes)
            .field("message_rate", &s.message_rate)
            .field("max_messages", &s.max_messages)
            .field("max_bytes", &s.max_bytes)
            .field("overflow", &s.overflow)
            .field("stall_timeout", &s.stall_timeout)
            .field("heartbeat", &s.heartbeat.as_ref().map(|h| h.0))
            .finish_non_exhaustive()
    }
}

impl Default for FlowSpec {
    fn default() -> Self {
        FlowSpec {
            byte_rate: None,
            free_bytes: 0,
            message_rate: None,
            max_messages: 1024,
            max_bytes: 1 << 20,
            overflow: Overflow::DropOldest,
            stall_timeout: None,
            heartbeat: None,
            gap_note: None,
            farewell: None,
            counters: None,
            peer_shutdown_ends: false,
        }
    }
}

impl FlowControl {
    /// The defaults: no rate limit, at most 1,024 messages and 1 MiB held,
    /// drop-oldest.
    pub fn new() -> Self {
        Self::default()
    }

    /// Messages held unsent at most.
    pub fn message_limit(&self) -> usize {
        self.spec.max_messages
    }

    /// Bytes held unsent at most.
    pub fn byte_limit(&self) -> usize {
        self.spec.max_bytes
    }

    /// The spec, copied first if other clones share it.
    fn spec_mut(&mut self) -> &mut FlowSpec {
        Arc::make_mut(&mut self.spec)
    }

    /// At most `per_sec` bytes a second, `burst` at once (both at least 1).
    pub fn byte_rate(mut self, per_sec: u64, burst: u64) -> Self {
        self.spec_mut().byte_rate = Some(Rate {
            per_sec: per_sec.max(1),
            burst: burst.max(1),
        });
        self
    }

    /// The first `n` bytes of the stream are not counted against the byte
    /// rate (nginx's `limit_rate_after`).
    pub fn free_bytes(mut self, n: u64) -> Self {
        self.spec_mut().free_bytes = n;
        self
    }

    /// At most `per_sec` messages a second, `burst` at once (both at least 1).
    pub fn message_rate(mut self, per_sec: u64, burst: u64) -> Self {
        self.spec_mut().message_rate = Some(Rate {
            per_sec: per_sec.max(1),
            burst: burst.max(1),
        });
        self
    }

    /// At most `n` messages held unsent (at least 1).
    pub fn max_messages(mut self, n: usize) -> Self {
        self.spec_mut().max_messages = n.max(1);
        self
    }

    /// At most `n` bytes held unsent. One message larger than this is still
    /// taken when nothing else is held.
    pub fn max_bytes(mut self, n: usize) -> Self {
        self.spec_mut().max_bytes = n;
        self
    }

    /// What happens to a message that does not fit the bound.
    pub fn overflow(mut self, policy: Overflow) -> Self {
        self.spec_mut().overflow = policy;
        self
    }

    /// Closes the connection with `slow_consumer` when output has waited this
    /// long with the socket taking none of it.
    pub fn stall_timeout(mut self, after: Duration) -> Self {
        self.spec_mut().stall_timeout = Some(after.min(LONGEST_WAIT));
        self
    }

    /// Sends `piece` whenever the stream has been silent for `every` (an SSE
    /// comment keeps proxies from timing the stream out and finds vanished
    /// peers).
    pub fn heartbeat(mut self, every: Duration, piece: impl Into<Bytes>) -> Self {
        let every = every.clamp(Duration::from_millis(1), LONGEST_WAIT);
        self.spec_mut().heartbeat = Some((every, piece.into()));
        self
    }

    /// Builds the piece sent ahead of the next message after drops, from the
    /// number dropped.
    pub fn gap_note(mut self, note: impl Fn(u64) -> Bytes + Send + Sync + 'static) -> Self {
        self.spec_mut().gap_note = Some(Arc::new(note));
        self
    }

    /// Counts this stream's sent and dropped messages into `counters` too.
    pub fn counters(mut self, counters: Arc<FlowCounters>) -> Self {
        self.spec_mut().counters = Some(counters);
        self
    }

    /// The stream (and its connection) ends as soon as the peer shuts its
    /// side, instead of at the next write that fails: for push streams,
    /// whose clients never half-close (`EventSource`, `curl -N`), so a
    /// subscriber that left is forgotten at once. Off by default: an HTTP/1.x
    /// client may half-close after its request and still read the answer.
    pub fn end_on_peer_shutdown(mut self) -> Self {
        self.spec_mut().peer_shutdown_ends = true;
        self
    }

    /// The last piece sent before the stream's end when a server shutdown
    /// ends it (an SSE comment and a `retry:` hint).
    pub fn farewell(mut self, piece: impl Into<Bytes>) -> Self {
        self.spec_mut().farewell = Some(piece.into());
        self
    }
}

/// A token bucket. A message goes when the balance covers its cost, or the
/// whole burst for a message larger than that (the balance then goes into
/// debt, so the long-run rate holds for any message size). While output waits
/// on the bucket the balance is not capped at the burst: a wake-up that comes
/// late is made up by an earlier next one, so the long-run rate is exact
/// however coarse the timers are.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    per_sec: f64,
    cap: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: Rate, now: Instant) -> Bucket {
        Bucket {
            per_sec: rate.per_sec as f64,
            cap: rate.burst as f64,
            tokens: rate.burst as f64,
            at: now,
        }
    }

    /// Adds what accrued since the last refill; `waiting`: output has been
    /// waiting on this bucket, so nothing accrued was idle time.
    fn refill(&mut self, now: Instant, waiting: bool) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens += dt * self.per_sec;
        if !waiting {
            self.tokens = self.tokens.min(self.cap);
        }
        self.at = now;
    }

    /// The balance a message costing `cost` needs.
    fn need(&self, cost: f64) -> f64 {
        cost.min(self.cap)
    }

    fn allows(&self, cost: f64) -> bool {
        self.tokens >= self.need(cost)
    }

    /// When the balance will cover `cost`.
    fn ready_at(&self, cost: f64) -> Instant {
        let wait = (self.need(cost) - self.tokens).max(0.0) / self.per_sec;
        self.at + Duration::from_secs_f64(wait) + Duration::from_micros(1)
    }
}

/// What became of a send to a flow-controlled stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Held {
    /// Held; `dropped` older messages were dropped to make room.
    Yes { dropped: u64 },
    /// Refused: the bound is reached and the policy is `Reject`.
    Rejected,
    /// The bound is reached and the policy is `Disconnect`.
    Disconnect,
}

/// What one release produced.
#[derive(Debug, Default)]
pub(crate) struct Released {
    /// Pieces to frame and write, in order.
    pub pieces: Vec<Bytes>,
    /// Of those, messages the producer sent (not notes or heartbeats).
    pub messages: u64,
    /// Time the rate limit held the first of them back.
    pub delayed: Duration,
}

/// A stream's flow-control state, kept under its connection's lock.
pub(crate) struct Pacer {
    cfg: Arc<FlowSpec>,
    /// Messages held, each with the number refused (`Reject`) just before
    /// it, to announce ahead of it.
    held: VecDeque<(u64, Bytes)>,
    held_bytes: usize,
    bytes: Option<Bucket>,
    messages: Option<Bucket>,
    /// Bytes still free of the byte rate.
    free_left: u64,
    /// Messages dropped from the front of the queue and not yet announced.
    gap: u64,
    /// Messages refused since the last one held (announced ahead of the
    /// next one held, where the gap is).
    refused: u64,
    /// Since when released output waits for the rate (not for the socket).
    throttled_since: Option<Instant>,
    /// When a piece last went out (or the stream began), for the heartbeat.
    last_out: Instant,
    /// Since when the socket has taken none of the stream's queued output.
    stalled_since: Option<Instant>,
    /// The earliest wake-up timer armed and not yet fired.
    pub timer_at: Option<Instant>,
    /// The poller was asked to release, and has not yet.
    pub release_asked: bool,
    /// The producer finished: end the stream once everything held is out.
    pub finishing: bool,
}

impl Pacer {
    pub fn new(flow: FlowControl, now: Instant) -> Pacer {
        let cfg = flow.spec;
        Pacer {
            bytes: cfg.byte_rate.map(|r| Bucket::new(r, now)),
            messages: cfg.message_rate.map(|r| Bucket::new(r, now)),
            free_left: cfg.free_bytes,
            cfg,
            held: VecDeque::new(),
            held_bytes: 0,
            gap: 0,
            refused: 0,
            throttled_since: None,
            last_out: now,
            stalled_since: None,
            timer_at: None,
            release_asked: false,
            finishing: false,
        }
    }

    /// Bytes held unsent.
    pub fn held_bytes(&self) -> usize {
        self.held_bytes
    }

    /// Messages held unsent.
    pub fn held_messages(&self) -> usize {
        self.held.len()
    }

    /// Whether released output is waiting for the rate.
    pub fn throttled(&self) -> bool {
        self.throttled_since.is_some()
    }

    /// Holds `piece`, applying the overflow policy if it does not fit.
    pub fn hold(&mut self, piece: Bytes) -> Held {
        let fits = |p: &Pacer| {
            p.held.is_empty()
                || (p.held.len() < p.cfg.max_messages
                    && p.held_bytes + piece.len() <= p.cfg.max_bytes)
        };
        let mut dropped = 0;
        if !fits(self) {
            match self.cfg.overflow {
                Overflow::Reject => {
                    // The consumer still learns of the gap, ahead of the
                    // next message held (not of those held before it).
                    self.refused += 1;
                    self.count(|c| &c.dropped, 1);
                    return Held::Rejected;
                }
                Overflow::Disconnect => return Held::Disconnect,
                Overflow::DropOldest => {
                    while !fits(self) {
                        let Some((refused, old)) = self.held.pop_front() else {
                            break;
                        };
                        self.held_bytes -= old.len();
                        self.gap += refused;
                        dropped += 1;
                    }
                    self.gap += dropped;
                    self.count(|c| &c.dropped, dropped);
                }
            }
        }
        self.held_bytes += piece.len();
        self.held
            .push_back((std::mem::take(&mut self.refused), piece));
        Held::Yes { dropped }
    }

    /// Releases what the rates allow now (the socket has taken everything
    /// before): held messages in order, a gap note ahead of the first after
    /// drops, or a heartbeat on a silent stream. `all`: ignore the rates (a
    /// shutdown sends everything held before the end).
    pub fn release(&mut self, now: Instant, all: bool) -> Released {
        let mut out = Released::default();
        let waiting = self.throttled_since.is_some();
        for b in self.bytes.iter_mut().chain(self.messages.iter_mut()) {
            b.refill(now, waiting);
        }
        while let Some((_, front)) = self.held.front() {
            let byte_cost = self.byte_cost(front.len());
            let open = self.bytes.as_ref().map_or(true, |b| b.allows(byte_cost))
                && self.messages.as_ref().map_or(true, |b| b.allows(1.0));
            if !open && !all {
                self.throttled_since.get_or_insert(now);
                break;
            }
            if let Some(since) = self.throttled_since.take() {
                out.delayed += now.saturating_duration_since(since);
            }
            let len = front.len() as u64;
            self.free_left -= len.min(self.free_left);
            if let Some(b) = &mut self.bytes {
                b.tokens -= byte_cost;
            }
            if let Some(b) = &mut self.messages {
                b.tokens -= 1.0;
            }
            if let Some((refused, piece)) = self.held.pop_front() {
                let gap = std::mem::take(&mut self.gap) + refused;
                if gap > 0 {
                    if let Some(note) = &self.cfg.gap_note {
                        out.pieces.push(note(gap));
                    }
                }
                self.held_bytes -= piece.len();
                out.pieces.push(piece);
                out.messages += 1;
            }
        }
        if self.held.is_empty() {
            self.throttled_since = None;
            if let Some((every, beat)) = &self.cfg.heartbeat {
                if out.pieces.is_empty() && now >= self.last_out + *every && !self.finishing {
                    out.pieces.push(beat.clone());
                }
            }
        }
        if !out.pieces.is_empty() {
            self.last_out = now;
        }
        self.count(|c| &c.sent, out.messages);
        out
    }

    fn count(&self, which: impl Fn(&FlowCounters) -> &AtomicU64, n: u64) {
        if let Some(c) = self.cfg.counters.as_deref().filter(|_| n > 0) {
            which(c).fetch_add(n, Relaxed);
        }
    }

    /// What a message of `len` bytes costs the byte bucket, after the free
    /// allowance.
    fn byte_cost(&self, len: usize) -> f64 {
        (len as u64).saturating_sub(self.free_left) as f64
    }

    /// Output waits on the socket, not on the rate: the time from here is
    /// not rate-limit delay, and the bucket refills as for an idle stream
    /// (capped at the burst), so a consumer that stalls does not earn a
    /// burst larger than its own when it comes back.
    /// Returns the rate-limit delay that ends here.
    pub fn socket_busy(&mut self, now: Instant) -> Duration {
        self.throttled_since
            .take()
            .map_or(Duration::ZERO, |since| now.saturating_duration_since(since))
    }

    /// Whether the peer shutting its side ends the stream.
    pub fn ends_on_peer_shutdown(&self) -> bool {
        self.cfg.peer_shutdown_ends
    }

    /// The farewell piece, for a shutdown.
    pub fn farewell(&self) -> Option<Bytes> {
        self.cfg.farewell.clone()
    }

    /// Tracks whether the socket is taking the stream's output: `queued`
    /// bytes wait in the connection's queue, `progressed` says some went out
    /// since the last call.
    pub fn socket_state(&mut self, now: Instant, queued: usize, progressed: bool) {
        if queued == 0 || progressed {
            self.stalled_since = (queued > 0).then_some(now);
        } else {
            self.stalled_since.get_or_insert(now);
        }
    }

    /// Whether the consumer has stalled past the stall timeout.
    pub fn stalled(&self, now: Instant) -> bool {
        match (self.stalled_since, self.cfg.stall_timeout) {
            (Some(since), Some(limit)) => now >= since + limit,
            _ => false,
        }
    }

    /// When the poller must look again: the rate opens, a heartbeat is due,
    /// or the stall timeout runs out. While output waits on the socket
    /// (`socket_busy`) nothing is released whatever the rate or the
    /// heartbeat say, and the flush that empties the queue brings the poller
    /// back: only the stall timeout counts then (a rate or heartbeat time
    /// already past would have the poller wake again at once, forever).
    pub fn next_due(&self, socket_busy: bool) -> Option<Instant> {
        let rate = self
            .throttled_since
            .filter(|_| !socket_busy)
            .and(self.held.front().map(|(_, front)| front))
            .and_then(|front| {
                let bytes = self.bytes.map(|b| b.ready_at(self.byte_cost(front.len())));
                let messages = self.messages.map(|b| b.ready_at(1.0));
                bytes.into_iter().chain(messages).max()
            });
        let beat = (self.held.is_empty() && !self.finishing && !socket_busy)
            .then(|| {
                self.cfg
                    .heartbeat
                    .as_ref()
                    .map(|(every, _)| self.last_out + *every)
            })
            .flatten();
        let stall = self
            .stalled_since
            .zip(self.cfg.stall_timeout)
            .map(|(since, limit)| since + limit);
        [rate, beat, stall].into_iter().flatten().min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(n: usize) -> Bytes {
        Bytes::from(vec![b'x'; n])
    }

    #[test]
    fn message_rate_releases_the_burst_then_one_per_interval() {
        let t0 = Instant::now();
        let mut p = Pacer::new(FlowControl::new().message_rate(10, 3), t0);
        for _ in 0..10 {
            assert_eq!(p.hold(piece(1)), Held::Yes { dropped: 0 });
        }
        assert_eq!(p.release(t0, false).messages, 3);
        assert!(p.throttled());
        let due = p.next_due(false).expect("a wake-up for the rate");
        assert!(due > t0 + Duration::from_millis(99) && due < t0 + Duration::from_millis(101));
        // Late by 30 ms: one goes now, and the next is due 70 ms later, not 100.
        let late = t0 + Duration::from_millis(130);
        let r = p.release(late, false);
        assert_eq!(r.messages, 1);
        assert_eq!(r.delayed, Duration::from_millis(130));
        let next = p.next_due(false).expect("due");
        let gap = next.duration_since(late);
        assert!(
            gap > Duration::from_millis(69) && gap < Duration::from_millis(71),
            "{gap:?}"
        );
    }

    #[test]
    fn a_socket_stall_earns_no_burst_beyond_the_bucket() {
        let t0 = Instant::now();
        let mut p = Pacer::new(FlowControl::new().message_rate(10, 1), t0);
        for _ in 0..50 {
            p.hold(piece(1));
        }
        assert_eq!(p.release(t0, false).messages, 1);
        assert!(p.throttled());
        // The socket fills; the consumer stalls for 10 s, then drains.
        let busy = t0 + Duration::from_millis(50);
        assert_eq!(p.socket_busy(busy), Duration::from_millis(50));
        let back = t0 + Duration::from_secs(10);
        let r = p.release(back, false);
        assert_eq!(r.messages, 1, "a burst of one, not 100");
        assert_eq!(r.delayed, Duration::ZERO);
    }

    #[test]
    fn the_long_run_rate_is_exact_with_late_wake_ups() {
        let t0 = Instant::now();
        let mut p = Pacer::new(
            FlowControl::new().message_rate(100, 1).max_messages(10_000),
            t0,
        );
        for _ in 0..2000 {
            p.hold(piece(10));
        }
        let mut now = t0;
        let mut sent = 0;
        while now < t0 + Duration::from_secs(10) {
            sent += p.release(now, false).messages;
            // Every wake-up 1.7 ms late, as a coarse poll timeout makes it.
            now = p.next_due(false).unwrap_or(now) + Duration::from_micros(1700);
        }
        assert!((999..=1002).contains(&sent), "{sent}");
    }

    #[test]
    fn byte_rate_counts_free_bytes_and_goes_into_debt() {
        let t0 = Instant::now();
        let cfg = FlowControl::new().byte_rate(1000, 1000).free_bytes(5000);
        let mut p = Pacer::new(cfg, t0);
        for _ in 0..10 {
            p.hold(piece(1000));
        }
        // 5 free pieces, then the 1000-byte burst, then one more into debt.
        assert_eq!(p.release(t0, false).messages, 6);
        assert!(p.throttled());
        let due = p.next_due(false).expect("due");
        assert!(due >= t0 + Duration::from_millis(999), "{:?}", due - t0);
        assert_eq!(p.release(due, false).messages, 1);
    }

    #[test]
    fn drop_oldest_keeps_the_bound_and_announces_the_gap() {
        let t0 = Instant::now();
        let cfg = FlowControl::new()
            .max_messages(3)
            .gap_note(|n| Bytes::from(format!("gap {n}")));
        let mut p = Pacer::new(cfg, t0);
        for i in 0..5u8 {
            p.hold(Bytes::from(vec![i]));
        }
        assert_eq!(p.held_messages(), 3);
        let r = p.release(t0, false);
        let got: Vec<&[u8]> = r.pieces.iter().map(|b| &b[..]).collect();
        assert_eq!(got, [&b"gap 2"[..], &[2], &[3], &[4]]);
        assert_eq!(r.messages, 3);
    }

    #[test]
    fn a_reject_gap_is_announced_where_it_is() {
        let t0 = Instant::now();
        let cfg = FlowControl::new()
            .max_messages(2)
            .overflow(Overflow::Reject)
            .gap_note(|n| Bytes::from(format!("gap {n}")));
        let mut p = Pacer::new(cfg, t0);
        for i in 0..5u8 {
            p.hold(Bytes::from(vec![i]));
        }
        // 0 and 1 held, 2 to 4 refused; 5 goes after the gap.
        let r = p.release(t0, false);
        let got: Vec<&[u8]> = r.pieces.iter().map(|b| &b[..]).collect();
        assert_eq!(got, [&[0u8][..], &[1]]);
        p.hold(Bytes::from(vec![5]));
        let r = p.release(t0, false);
        let got: Vec<&[u8]> = r.pieces.iter().map(|b| &b[..]).collect();
        assert_eq!(got, [&b"gap 3"[..], &[5]]);
    }

    #[test]
    fn shared_counters_see_sends_and_drops() {
        let t0 = Instant::now();
        let counters = Arc::new(FlowCounters::new());
        let cfg = FlowControl::new()
            .max_messages(2)
            .counters(counters.clone());
        let mut p = Pacer::new(cfg.clone(), t0);
        let mut q = Pacer::new(cfg.overflow(Overflow::Reject), t0);
        for _ in 0..5 {
            p.hold(piece(1));
            q.hold(piece(1));
        }
        p.release(t0, false);
        q.release(t0, false);
        assert_eq!((counters.sent(), counters.dropped()), (4, 6));
    }

    #[test]
    fn byte_bound_drops_until_the_new_message_fits() {
        let mut p = Pacer::new(FlowControl::new().max_bytes(100), Instant::now());
        p.hold(piece(60));
        p.hold(piece(30));
        assert_eq!(p.hold(piece(50)), Held::Yes { dropped: 1 });
        assert_eq!(p.held_bytes(), 80);
        // One message over the bound is still taken alone.
        assert_eq!(p.hold(piece(500)), Held::Yes { dropped: 2 });
        assert_eq!(p.held_bytes(), 500);
    }

    #[test]
    fn reject_and_disconnect_refuse_past_the_bound() {
        let t0 = Instant::now();
        for (policy, want) in [
            (Overflow::Reject, Held::Rejected),
            (Overflow::Disconnect, Held::Disconnect),
        ] {
            let mut p = Pacer::new(FlowControl::new().max_messages(2).overflow(policy), t0);
            p.hold(piece(1));
            p.hold(piece(1));
            assert_eq!(p.hold(piece(1)), want);
            assert_eq!(p.held_messages(), 2);
        }
    }

    #[test]
    fn heartbeat_only_on_a_silent_stream() {
        let t0 = Instant::now();
        let every = Duration::from_secs(15);
        let mut p = Pacer::new(FlowControl::new().heartbeat(every, ":\n\n"), t0);
        assert_eq!(p.next_due(false), Some(t0 + every));
        assert!(p
            .release(t0 + Duration::from_secs(14), false)
            .pieces
            .is_empty());
        p.hold(piece(3));
        let t1 = t0 + Duration::from_secs(14);
        assert_eq!(p.release(t1, false).pieces.len(), 1);
        assert_eq!(p.next_due(false), Some(t1 + every));
        let beat = p.release(t1 + every, false);
        assert_eq!((beat.pieces.len(), beat.messages), (1, 0));
    }

    #[test]
    fn nothing_but_the_stall_is_due_while_the_socket_is_busy() {
        let t0 = Instant::now();
        let every = Duration::from_millis(20);
        let limit = Duration::from_secs(2);
        let cfg = FlowControl::new()
            .message_rate(10, 1)
            .heartbeat(every, ":\n\n")
            .stall_timeout(limit);
        let mut p = Pacer::new(cfg.clone(), t0);
        p.hold(piece(1));
        p.hold(piece(1));
        p.release(t0, false);
        assert!(p.throttled());
        assert_eq!(p.next_due(true), None);
        p.socket_state(t0, 100, false);
        assert_eq!(p.next_due(true), Some(t0 + limit));
        // Nothing held: the heartbeat is due only once the socket is free.
        let q = Pacer::new(cfg, t0);
        assert_eq!(q.next_due(true), None);
        assert_eq!(q.next_due(false), Some(t0 + every));
    }

    #[test]
    fn stall_counts_from_the_last_progress() {
        let t0 = Instant::now();
        let limit = Duration::from_secs(2);
        let mut p = Pacer::new(FlowControl::new().stall_timeout(limit), t0);
        p.socket_state(t0, 100, false);
        p.socket_state(t0 + Duration::from_secs(1), 50, true);
        assert!(!p.stalled(t0 + Duration::from_secs(2)));
        assert!(p.stalled(t0 + Duration::from_secs(3)));
        p.socket_state(t0 + Duration::from_secs(3), 0, true);
        assert!(!p.stalled(t0 + Duration::from_secs(10)));
    }
}
