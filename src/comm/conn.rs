//! [`Conn`]: the socket and outbound queue shared by the poller and writers.

use crate::metrics::{CloseReason, ConnStats};
use crate::poller::{self, Command};
use bytes::{Buf, Bytes};
use mio::net::TcpStream;
use std::cell::Cell;
use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// Bytes per cache line (x86-64 and most ARM cores), the prefetch stride.
const CACHE_LINE: usize = 64;

/// Slices handed to one `writev`.
const MAX_IOV: usize = 64;

/// Where a connection's output stands after a send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendState {
    /// Everything was written to the socket.
    Written,
    /// Some output is queued; the connection is paused until the socket drains.
    Queued,
    /// Queued output is above the high watermark: slow down.
    AboveHigh,
}

/// What a send completes, so its end can be timed when the last byte leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Done {
    /// A server reply; the owner decides the connection's fate after it.
    Reply {
        keep_alive: bool,
        head: u64,
        body: u64,
        status: Option<u16>,
    },
    /// A client request.
    Request { head: u64, body: u64 },
    /// The error reply to a request that failed to parse (timed and counted in
    /// the status counters, but not a request served).
    Rejection {
        head: u64,
        body: u64,
        status: Option<u16>,
    },
}

/// A send that could not be accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SendError {
    /// The connection is closed or broken.
    Closed,
    /// Accepting the data would pass the hard queue limit.
    Full,
}

/// State guarded by the connection's lock.
pub(crate) struct ConnState {
    out: VecDeque<Bytes>,
    queued: usize,
    closed: bool,
    /// A write failed; the poller closes with this reason.
    pub broken: Option<CloseReason>,
    /// A reply finished and the owner has not looked yet (server side).
    pub replied: bool,
    /// Close once output is flushed.
    pub close_after: bool,
    /// The request in flight was recorded by its dispatcher (its series went
    /// asynchronous); the reply must not record it again.
    pub request_recorded: bool,
    /// The owner must be told about a pause (arm the send timeout).
    pub pause_unseen: bool,
    /// Completes when the queue drains.
    /// Boxed: only a reply that did not fit the socket at once needs it, and
    /// every idle connection would otherwise carry its 32 bytes.
    pending: Option<Box<Done>>,
    pub stats: ConnStats,
}

impl ConnState {
    /// Bytes queued unwritten.
    pub fn queued(&self) -> usize {
        self.queued
    }
}

/// A connection's socket and everything writers share with the poller.
pub(crate) struct Conn {
    stream: TcpStream,
    /// The poller that owns the read side.
    pub poller: u32,
    /// The handler's token on that poller.
    pub token: u32,
    /// Process-unique connection id.
    pub id: u64,
    high: u32,
    max_queued: u32,
    state: Mutex<ConnState>,
}

thread_local! {
    /// The connection whose handler is dispatching inline on this thread; a reply
    /// to it needs no wake-up because the handler looks right after.
    static DISPATCHING: Cell<u64> = const { Cell::new(0) };
}

/// A request as it arrived, for the access log: recorded under the
/// connection's lock, by the reply when that comes inline.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Arrival {
    /// When the request was complete.
    pub at: Instant,
    /// Header and framing bytes.
    pub head: u64,
    /// Payload bytes.
    pub body: u64,
    /// Bytes read from the socket and not yet counted.
    pub bytes_in: u32,
}

impl Arrival {
    /// Adds the request to `stats`.
    pub fn record(&self, stats: &mut ConnStats) {
        stats.add_in(self.bytes_in as usize);
        stats.request_complete(self.at, self.head, self.body);
    }
}

/// What a reply sent during an inline dispatch left for the dispatcher, which
/// would otherwise find it in the shared state under the lock.
#[derive(Debug, Clone, Copy)]
pub(crate) struct InlineReply {
    id: u64,
    /// Bytes still queued after the reply.
    pub queued: usize,
    /// The connection closes once output is flushed.
    pub close_after: bool,
    /// A write failed: the shared state holds the reason.
    pub failed: bool,
}

thread_local! {
    static INLINE_REPLY: Cell<Option<InlineReply>> = const { Cell::new(None) };
}

/// Takes the reply that connection `id` sent during its inline dispatch.
pub(crate) fn take_inline_reply(id: u64) -> Option<InlineReply> {
    INLINE_REPLY
        .with(|r| r.take())
        .filter(|reply| reply.id == id)
}

/// Runs `f` marked as an inline dispatch for connection `id`.
pub(crate) fn inline_dispatch<R>(id: u64, f: impl FnOnce() -> R) -> R {
    let prev = DISPATCHING.with(|d| d.replace(id));
    let r = f();
    DISPATCHING.with(|d| d.set(prev));
    r
}

impl Conn {
    /// Prefetches the whole connection (its reference counts, lock, queue
    /// and stats), an event before its handler runs.
    pub(crate) fn prefetch(self: &Arc<Self>) {
        // The counts sit before the data, in the same allocation.
        let counts = 2 * std::mem::size_of::<usize>();
        let start = Arc::as_ptr(self).cast::<u8>().wrapping_sub(counts);
        for offset in (0..counts + std::mem::size_of::<Conn>()).step_by(CACHE_LINE) {
            crate::sys::prefetch(start.wrapping_add(offset));
        }
    }

    pub fn new(
        stream: TcpStream,
        poller: usize,
        token: usize,
        id: u64,
        stats: ConnStats,
        config: &super::ConnConfig,
    ) -> Conn {
        Conn {
            stream,
            poller: poller as u32,
            token: token as u32,
            id,
            high: config.high_watermark.min(u32::MAX as usize) as u32,
            max_queued: config.max_queued.min(u32::MAX as usize) as u32,
            state: Mutex::new(ConnState {
                out: VecDeque::new(),
                queued: 0,
                closed: false,
                broken: None,
                replied: false,
                close_after: false,
                request_recorded: false,
                pause_unseen: false,
                pending: None,
                stats,
            }),
        }
    }

    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Locks the shared state (a poisoned lock is still usable: no invariant of
    /// ours spans a panic).
    pub fn lock(&self) -> MutexGuard<'_, ConnState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads into `buf`, counting the bytes.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        crate::sys::recv(self.stream.as_raw_fd(), buf)
    }

    /// Writes `chunks` now if nothing is queued, queuing what the socket does not
    /// take. From a thread other than the owning poller, a pause or a finished
    /// reply wakes the poller (a pause arms the send timeout).
    pub fn send(
        &self,
        chunks: &mut Vec<Bytes>,
        done: Option<Done>,
    ) -> Result<SendState, SendError> {
        self.send_inner(&[], chunks, done, None)
    }

    /// A server's reply: [`send`](Self::send) with `head` going out before
    /// `chunks`, written from the caller's buffer (only what the socket does not
    /// take is copied into the queue). It first records the request's `arrival`
    /// if the dispatcher left that to it, so an inline exchange takes the lock
    /// once.
    pub fn reply(
        &self,
        head: &[u8],
        chunks: &mut Vec<Bytes>,
        done: Done,
        arrival: Option<Arrival>,
    ) -> Result<SendState, SendError> {
        self.send_inner(head, chunks, Some(done), arrival)
    }

    fn send_inner(
        &self,
        head: &[u8],
        chunks: &mut Vec<Bytes>,
        done: Option<Done>,
        arrival: Option<Arrival>,
    ) -> Result<SendState, SendError> {
        let mut head = head;
        if !head.is_empty() && !chunks.is_empty() {
            // Large or chunked bodies: one writev of all the pieces.
            chunks.insert(0, Bytes::copy_from_slice(head));
            head = &[];
        }
        let mut st = self.lock();
        if let Some(a) = arrival {
            // Unless the dispatcher recorded it when the series went asynchronous.
            if !std::mem::take(&mut st.request_recorded) {
                a.record(&mut st.stats);
            }
        }
        // After the first exchange the events below only count: any instant
        // will do, and the clock is not read.
        let now = if st.stats.wants_clock() {
            Instant::now()
        } else {
            st.stats.start_instant()
        };
        if let Some(Done::Reply { .. } | Done::Rejection { .. }) = done {
            st.stats.response_started(now);
        }
        let res = self.send_locked(&mut st, head, chunks);
        let mut wake = st.pause_unseen;
        match (done, res) {
            (Some(d), Ok(SendState::Written)) => complete(&mut st, d, now),
            (Some(d), Ok(_)) => st.pending = Some(Box::new(d)),
            _ => {}
        }
        let inline = DISPATCHING.with(|d| d.get()) == self.id;
        if let Some(Done::Reply { keep_alive, .. }) = done {
            st.stats.request_done();
            st.close_after |= !keep_alive || res.is_err();
            if inline {
                // The dispatcher picks this up as soon as the series returns,
                // a pause included.
                st.pause_unseen = false;
                INLINE_REPLY.with(|r| {
                    r.set(Some(InlineReply {
                        id: self.id,
                        queued: st.queued,
                        close_after: st.close_after,
                        failed: st.broken.is_some(),
                    }))
                });
            } else {
                st.replied = true;
                wake = true;
            }
        }
        drop(st);
        if wake && !inline {
            poller::send(
                self.poller as usize,
                Command::Wake {
                    token: self.token as usize,
                    id: self.id,
                },
            );
        }
        res
    }

    /// Writes `head` (when `chunks` is empty) or `chunks`, queuing the rest.
    fn send_locked(
        &self,
        st: &mut ConnState,
        head: &[u8],
        chunks: &mut Vec<Bytes>,
    ) -> Result<SendState, SendError> {
        if st.closed || st.broken.is_some() {
            chunks.clear();
            return Err(SendError::Closed);
        }
        let total: usize = head.len() + chunks.iter().map(Bytes::len).sum::<usize>();
        if st.queued + total > self.max_queued as usize {
            chunks.clear();
            return Err(SendError::Full);
        }
        let mut head = head;
        if st.out.is_empty() {
            let written = if head.is_empty() {
                write_chunks(&self.stream, chunks)
            } else {
                write_one(&self.stream, head)
            };
            match written {
                Ok(n) => {
                    st.stats.add_out(n);
                    if head.is_empty() {
                        advance(chunks, n);
                    } else {
                        head = head.get(n..).unwrap_or_default();
                    }
                }
                Err(e) => {
                    st.broken = Some(CloseReason::Reset);
                    chunks.clear();
                    log::debug!("taskweave: write failed: {e}");
                    return Err(SendError::Closed);
                }
            }
            if head.is_empty() && chunks.is_empty() {
                return Ok(SendState::Written);
            }
            st.stats.pause(Instant::now());
            st.pause_unseen = true;
        }
        if !head.is_empty() {
            st.queued += head.len();
            st.out.push_back(Bytes::copy_from_slice(head));
        }
        for c in chunks.drain(..) {
            if !c.is_empty() {
                st.queued += c.len();
                st.out.push_back(c);
            }
        }
        let queued = st.queued;
        st.stats.queued(queued);
        Ok(if queued > self.high as usize {
            SendState::AboveHigh
        } else {
            SendState::Queued
        })
    }

    /// Writes queued output (poller side). Returns the bytes still queued.
    pub fn flush(&self) -> usize {
        let mut st = self.lock();
        self.flush_locked(&mut st)
    }

    pub fn flush_locked(&self, st: &mut ConnState) -> usize {
        while !st.out.is_empty() && st.broken.is_none() {
            let mut iov = [IoSlice::new(&[]); MAX_IOV];
            let n_iov = st.out.len().min(MAX_IOV);
            for (slot, chunk) in iov.iter_mut().zip(st.out.iter()) {
                *slot = IoSlice::new(chunk);
            }
            match (&self.stream).write_vectored(&iov[..n_iov]) {
                Ok(0) => {
                    st.broken = Some(CloseReason::Reset);
                }
                Ok(mut n) => {
                    st.stats.add_out(n);
                    st.queued -= n;
                    while n > 0 {
                        let Some(front) = st.out.front_mut() else {
                            break;
                        };
                        if front.len() <= n {
                            n -= front.len();
                            st.out.pop_front();
                        } else {
                            front.advance(n);
                            n = 0;
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => st.broken = Some(CloseReason::Reset),
            }
        }
        if st.out.is_empty() {
            let now = Instant::now();
            st.stats.resume(now);
            st.out = VecDeque::new(); // give the ring's memory back while idle
            if let Some(d) = st.pending.take() {
                complete(st, *d, now);
            }
        }
        st.queued
    }

    /// Bytes queued unwritten.
    pub fn queued(&self) -> usize {
        self.lock().queued
    }

    /// The high watermark.
    pub fn high_watermark(&self) -> usize {
        self.high as usize
    }

    /// Stops all writing and shuts the socket down; returns the final stats.
    pub fn close(&self, reason: CloseReason) -> ConnStats {
        let mut st = self.lock();
        st.closed = true;
        st.out.clear();
        st.queued = 0;
        let local = self.stream.local_addr().ok();
        st.stats.close(reason, local);
        let _ = self.stream.shutdown(Shutdown::Both);
        st.stats.clone()
    }

    /// Half-closes the write side (lingering close after an error reply).
    pub fn shutdown_write(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }
}

/// Times the end of a reply or request whose last byte just left.
fn complete(st: &mut ConnState, done: Done, now: Instant) {
    match done {
        Done::Reply {
            head, body, status, ..
        }
        | Done::Rejection { head, body, status } => {
            st.stats.response_complete(now, head, body, status)
        }
        Done::Request { head, body } => st.stats.request_complete(now, head, body),
    }
}

/// One `writev` per call until the socket stops taking data; returns bytes written.
fn write_chunks(stream: &TcpStream, chunks: &[Bytes]) -> io::Result<usize> {
    if let [only] = chunks {
        return write_one(stream, only);
    }
    let mut written = 0;
    let mut skip = 0;
    let mut offset = 0;
    while skip < chunks.len() {
        let mut iov = [IoSlice::new(&[]); MAX_IOV];
        let mut n_iov = 0;
        for (i, c) in chunks[skip..].iter().take(MAX_IOV).enumerate() {
            iov[n_iov] = IoSlice::new(if i == 0 { &c[offset..] } else { c });
            n_iov += 1;
        }
        match (&*stream).write_vectored(&iov[..n_iov]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(mut n) => {
                written += n;
                while n > 0 && skip < chunks.len() {
                    let left = chunks[skip].len() - offset;
                    if n >= left {
                        n -= left;
                        skip += 1;
                        offset = 0;
                    } else {
                        offset += n;
                        n = 0;
                    }
                }
                while skip < chunks.len() && chunks[skip].len() == offset {
                    skip += 1;
                    offset = 0;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(written)
}

/// A plain `write` for the common single-chunk reply (cheaper than `writev`).
fn write_one(stream: &TcpStream, chunk: &[u8]) -> io::Result<usize> {
    let mut written = 0;
    while written < chunk.len() {
        match crate::sys::send(stream.as_raw_fd(), chunk.get(written..).unwrap_or_default()) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(written)
}

/// Drops the first `n` bytes of `chunks`.
fn advance(chunks: &mut Vec<Bytes>, mut n: usize) {
    let mut drop_n = 0;
    for c in chunks.iter_mut() {
        if n == 0 {
            break;
        }
        if c.len() <= n {
            n -= c.len();
            drop_n += 1;
        } else {
            c.advance(n);
            n = 0;
        }
    }
    chunks.drain(..drop_n);
}
