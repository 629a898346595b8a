//! Client connection pools: one per target, protocol and `ClientConfig`, on
//! one poller.
//!
//! All requests to one target (host, port, protocol and config) go to the same
//! poller, chosen by hashing the target, so its pool lives on one thread and
//! needs no lock: an exact `max_per_target`, reuse of the most recently used
//! idle connection first (it is the least likely to have been closed by the
//! peer), pipelining onto busy connections up to the protocol's
//! `max_in_flight` once every connection is open, and a bounded queue of
//! requests waiting for capacity, each with a deadline. A pool with no
//! connection and nothing waiting is removed, so configs and targets that come
//! and go leave nothing behind.

use super::client::{self, InFlight};
use super::service::Job;
use super::{ClientConfig, Target};
use crate::error::Error;
use crate::poller::{self, Core, TimerKey};
use crate::protocol::Protocol;
use slab::Slab;
use std::any::{Any, TypeId};
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, TryLockError};
use std::time::Instant;

/// Identifies a pool. Its hash is computed once, when the request is
/// submitted, and the pool map passes it through: a request looks its pool
/// up several times on its way, and SipHash over a host name each time cost
/// more than the rest of the client's bookkeeping.
#[derive(Debug, Clone)]
pub(super) struct PoolKey {
    hash: u64,
    proto: TypeId,
    /// The protocol value's `connection_class`.
    class: u64,
    target: Target,
    /// The config's identity (its `Arc`'s address; the pool holds the `Arc`,
    /// so the address is not reused while the pool exists).
    config: usize,
}

impl PoolKey {
    /// The target its connections go to.
    pub(super) fn target(&self) -> &Target {
        &self.target
    }

    fn new(proto: TypeId, class: u64, target: Target, config: usize) -> PoolKey {
        // FNV-1a: the few pools of a process need no flood resistance, and
        // this runs once per request.
        let mut h = FnvHasher::default();
        (proto, class, &target, config).hash(&mut h);
        PoolKey {
            hash: h.finish(),
            proto,
            class,
            target,
            config,
        }
    }
}

impl PartialEq for PoolKey {
    fn eq(&self, other: &PoolKey) -> bool {
        self.hash == other.hash
            && self.proto == other.proto
            && self.class == other.class
            && self.config == other.config
            && self.target == other.target
    }
}

impl Eq for PoolKey {}

impl Hash for PoolKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// A hasher that passes a [`PoolKey`]'s precomputed hash through.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used; fold anything else in, to stay correct.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// FNV-1a, for [`PoolKey::new`].
struct FnvHasher(u64);

impl Default for FnvHasher {
    fn default() -> Self {
        FnvHasher(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for FnvHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

type Pools = HashMap<PoolKey, Box<dyn Any + Send>, BuildHasherDefault<PassThrough>>;

/// A connection of the pool, as the pool sees it.
struct Member<P: Protocol> {
    /// The connection's poller token and id (a token alone may be reused).
    token: usize,
    id: u64,
    /// Requests assigned to it and not finished.
    in_flight: usize,
    /// Connected (not still connecting).
    open: bool,
    /// Requests assigned but not yet taken by the connection.
    inbox: Vec<InFlight<P>>,
}

struct Waiting<P: Protocol> {
    id: u64,
    item: InFlight<P>,
    timer: Option<TimerKey>,
}

struct Pool<P: Protocol> {
    proto: Arc<P>,
    config: Arc<ClientConfig>,
    target: Target,
    /// Open or connecting connections; a connection knows its seat here.
    members: Slab<Member<P>>,
    /// The seats of open connections with nothing in flight, most recently
    /// used last: a request takes the last one in O(1).
    idle: Vec<usize>,
    /// Connection attempts not registered yet: resolving the name, or moving
    /// on to the next address after a failed connect.
    resolving: usize,
    waiting: VecDeque<Waiting<P>>,
    /// Waiting requests with no deadline armed yet.
    unarmed: usize,
    next_wait: u64,
}

impl<P: Protocol> Pool<P> {
    fn total(&self) -> usize {
        self.members.len() + self.resolving
    }
}

/// Each poller's pools, by poller index. A pool is only touched by the
/// thread running its poller, so the lock is never contended; they are not
/// thread-locals because a poller's loop can move to another thread (see
/// `poller::take_over`). Typed `Any` because a poller serves pools of many
/// protocols.
static POOLS: OnceLock<Box<[Mutex<Pools>]>> = OnceLock::new();

/// The pools of the poller running on this thread. Held only by the
/// thread that holds the loop, so a lock already taken is a call back into
/// the pools from within them: a bug, which panics rather than hangs.
fn pools_here() -> MutexGuard<'static, Pools> {
    let all = POOLS.get_or_init(|| {
        (0..poller::count())
            .map(|_| Mutex::new(Pools::default()))
            .collect()
    });
    let index = poller::current().unwrap_or(0) % all.len();
    match all[index].try_lock() {
        Ok(pools) => pools,
        Err(TryLockError::Poisoned(e)) => e.into_inner(),
        Err(TryLockError::WouldBlock) => {
            panic!("taskweave: poller {index}'s client pools re-entered while in use")
        }
    }
}

/// Runs `f` on the pool for `key`, if it exists. The borrow ends before
/// anything else runs, so `f` must not call out of the pool.
fn with_pool<P: Protocol, R>(key: &PoolKey, f: impl FnOnce(&mut Pool<P>) -> R) -> Option<R> {
    let mut pools = pools_here();
    let pool = pools.get_mut(key)?.downcast_mut::<Pool<P>>()?;
    Some(f(pool))
}

/// Removes the pool for `key` if it holds nothing.
fn forget_if_empty<P: Protocol>(key: &PoolKey) {
    let mut pools = pools_here();
    let empty = pools
        .get(key)
        .and_then(|p| p.downcast_ref::<Pool<P>>())
        .is_some_and(|p| p.total() == 0 && p.waiting.is_empty());
    if empty {
        pools.remove(key);
    }
}

/// The poller that serves a pool.
fn poller_for(key: &PoolKey) -> usize {
    (key.hash as usize) % poller::count()
}

/// Sends `job` to `target` over the pool for (`proto`'s type, `target`,
/// `config`), from any thread. Its outcome comes through [`Job::complete`]
/// on the pool's poller thread.
pub(crate) fn submit<P: Protocol>(
    proto: Arc<P>,
    target: Target,
    config: Arc<ClientConfig>,
    job: Box<dyn Job<P>>,
) {
    let item = InFlight::new(job, Instant::now());
    let config_id = Arc::as_ptr(&config) as *const () as usize;
    let key = PoolKey::new(
        TypeId::of::<P>(),
        proto.connection_class(),
        target.clone(),
        config_id,
    );
    poller::run_on(poller_for(&key), move |core| {
        {
            pools_here().entry(key.clone()).or_insert_with(|| {
                Box::new(Pool {
                    proto,
                    config,
                    target,
                    members: Slab::new(),
                    idle: Vec::new(),
                    resolving: 0,
                    waiting: VecDeque::new(),
                    unarmed: 0,
                    next_wait: 0,
                })
            });
        }
        enqueue(core, &key, item);
    });
}

/// Queues a new request for a connection, then lets the pool hand out what
/// it can.
pub(super) fn enqueue<P: Protocol>(core: &mut Core, key: &PoolKey, item: InFlight<P>) {
    if !push_waiting(key, item, false) {
        return;
    }
    dispatch::<P>(core, key);
    // `max_waiting` bounds what must wait: a request that found room at once
    // never counted against it. Only the newest can be over the bound.
    let refused = with_pool::<P, _>(key, |pool| {
        if pool.waiting.len() <= pool.config.max_waiting {
            return None;
        }
        let w = pool.waiting.pop_back()?;
        match w.timer {
            Some(timer) => Some((w.item, Some(timer))),
            None => {
                pool.unarmed = pool.unarmed.saturating_sub(1);
                Some((w.item, None))
            }
        }
    })
    .flatten();
    if let Some((item, timer)) = refused {
        if let Some(timer) = timer {
            core.cancel_timer(timer);
        }
        item.fail(Error::LimitExceeded(
            "too many requests waiting for a connection",
        ));
        forget_if_empty::<P>(key);
    }
}

/// Gives a deadline to each waiting request that has none yet (called when
/// dispatching stops with requests still waiting: most never wait, and
/// never cost a timer).
fn arm_wait_timers<P: Protocol>(core: &mut Core, key: &PoolKey, pool: &mut Pool<P>) {
    if pool.unarmed == 0 {
        return;
    }
    pool.unarmed = 0;
    let deadline = Instant::now() + pool.config.wait_timeout;
    for w in pool.waiting.iter_mut().filter(|w| w.timer.is_none()) {
        let (expired_key, id) = (key.clone(), w.id);
        w.timer = Some(core.add_timer(
            deadline,
            Box::new(move |core, cancelled| {
                if !cancelled {
                    wait_expired::<P>(core, &expired_key, id);
                }
            }),
        ));
    }
}

/// A request waited for a connection past its deadline.
fn wait_expired<P: Protocol>(_core: &mut Core, key: &PoolKey, id: u64) {
    let expired = with_pool::<P, _>(key, |pool| {
        let at = pool.waiting.iter().position(|w| w.id == id)?;
        pool.waiting.remove(at)
    })
    .flatten();
    if let Some(w) = expired {
        w.item.fail(Error::WaitTimeout);
    }
    forget_if_empty::<P>(key);
}

/// What the pool decided for the request at the head of the queue.
enum Step<P: Protocol> {
    /// Handed to the connection at this token and id; `true` if its inbox
    /// was empty (it is to be woken to take it).
    Assigned(usize, u64, bool),
    /// A new connection is to be opened for it.
    Open(InFlight<P>, Arc<P>, Arc<ClientConfig>, Target),
    /// Nothing can take it now.
    Wait,
}

/// Hands waiting requests to connections with room, opening new ones while
/// under `max_per_target`: an idle open connection first (most recently used),
/// then a new connection, then pipelining onto the least busy one.
pub(super) fn dispatch<P: Protocol>(core: &mut Core, key: &PoolKey) {
    loop {
        let step = with_pool::<P, _>(key, |pool| {
            if pool.waiting.is_empty() {
                return (Step::Wait, None);
            }
            let seat = match pool.idle.pop() {
                Some(seat) => Some(seat),
                None if pool.total() < pool.config.max_per_target => None,
                None => {
                    let depth = pool.proto.max_in_flight().max(1);
                    let busy = pool
                        .members
                        .iter()
                        .filter(|(_, m)| m.in_flight < depth)
                        .min_by_key(|(_, m)| m.in_flight);
                    match busy {
                        Some((seat, _)) => Some(seat),
                        None => {
                            arm_wait_timers(core, key, pool);
                            return (Step::Wait, None);
                        }
                    }
                }
            };
            let Some(w) = pool.waiting.pop_front() else {
                return (Step::Wait, None);
            };
            if w.timer.is_none() {
                pool.unarmed = pool.unarmed.saturating_sub(1);
            }
            match seat.and_then(|seat| pool.members.get_mut(seat)) {
                Some(m) => {
                    m.in_flight += 1;
                    let first = m.inbox.is_empty();
                    m.inbox.push(w.item.reused(m.open && m.in_flight == 1));
                    (Step::Assigned(m.token, m.id, first), w.timer)
                }
                None => {
                    pool.resolving += 1;
                    let open = Step::Open(
                        w.item,
                        pool.proto.clone(),
                        pool.config.clone(),
                        pool.target.clone(),
                    );
                    (open, w.timer)
                }
            }
        });
        let Some((step, timer)) = step else { return };
        if let Some(timer) = timer {
            core.cancel_timer(timer);
        }
        match step {
            Step::Wait => return,
            // The wake is queued, not made here: the requests submitted in
            // this poller turn all reach the inbox first, and the
            // connection writes them in one `writev`.
            Step::Assigned(token, id, first) if core.id_of(token) == Some(id) => {
                if first {
                    poller::send(core.index(), poller::Command::Wake { token, id });
                }
            }
            Step::Assigned(token, id, _) => {
                // A connection that went without leaving (a panic escaped
                // it): drop it and give its requests to another.
                reclaim::<P>(key, token, id);
            }
            Step::Open(item, proto, config, target) => {
                client::open(core, key.clone(), item, proto, config, target)
            }
        }
    }
}

/// A connection attempt is registered at `token` (its name resolved), with
/// `in_flight` requests (its first, or those of an attempt at an earlier
/// address); returns its seat in the pool.
pub(super) fn joined<P: Protocol>(key: &PoolKey, token: usize, id: u64, in_flight: usize) -> usize {
    with_pool::<P, _>(key, |pool| {
        pool.resolving = pool.resolving.saturating_sub(1);
        pool.members.insert(Member {
            token,
            id,
            in_flight,
            open: false,
            inbox: Vec::new(),
        })
    })
    .unwrap_or(usize::MAX)
}

/// A connection attempt failed before it had a connection.
///
/// The pool goes on from a command of its own rather than from here: an
/// attempt can fail at once (an unreachable address, out of descriptors),
/// inside `dispatch`, and going on from here would recurse once per waiting
/// request, deep enough to overflow the poller's stack.
pub(super) fn attempt_failed<P: Protocol>(core: &mut Core, key: &PoolKey) {
    with_pool::<P, _>(key, |pool| {
        pool.resolving = pool.resolving.saturating_sub(1)
    });
    let key = key.clone();
    poller::run_on(core.index(), move |core| {
        dispatch::<P>(core, &key);
        forget_if_empty::<P>(&key);
    });
}

/// The connection at `seat` could not connect, and its requests move to an
/// attempt at the target's next address: it leaves the pool, whose count of
/// connections still includes the new attempt (as one resolving), so no
/// other connection is opened in its place meanwhile. It must have taken
/// its inbox.
pub(super) fn moving_on<P: Protocol>(key: &PoolKey, seat: usize, token: usize, id: u64) {
    with_pool::<P, _>(key, |pool| {
        if pool.members.get(seat).map(|m| (m.token, m.id)) == Some((token, id)) {
            pool.idle.retain(|&s| s != seat);
            pool.members.remove(seat);
        }
        pool.resolving += 1;
    });
}

/// The connection at `seat` is connected.
pub(super) fn opened<P: Protocol>(key: &PoolKey, seat: usize) {
    with_pool::<P, _>(key, |pool| {
        if let Some(m) = pool.members.get_mut(seat) {
            m.open = true;
            if m.in_flight == 0 {
                pool.idle.push(seat);
            }
        }
    });
}

/// Runs `take` on each request assigned to the connection at `seat` and
/// not yet taken, in order (the member's buffer keeps its capacity).
pub(super) fn take_inbox<P: Protocol>(key: &PoolKey, seat: usize, take: impl FnMut(InFlight<P>)) {
    with_pool::<P, _>(key, |pool| {
        if let Some(m) = pool.members.get_mut(seat) {
            m.inbox.drain(..).for_each(take);
        }
    });
}

/// The connection at `seat` finished a request; once idle it becomes the
/// most recently used. Waiting requests may now go to it.
pub(super) fn finished_one<P: Protocol>(core: &mut Core, key: &PoolKey, seat: usize) {
    with_pool::<P, _>(key, |pool| {
        if let Some(m) = pool.members.get_mut(seat) {
            m.in_flight = m.in_flight.saturating_sub(1);
            if m.in_flight == 0 && m.open {
                pool.idle.push(seat);
            }
        }
    });
    dispatch::<P>(core, key);
}

/// The connection at `seat` closed: it leaves the pool, and what was
/// assigned to it but never taken goes back to the front of the queue.
pub(super) fn left<P: Protocol>(
    core: &mut Core,
    key: &PoolKey,
    seat: usize,
    token: usize,
    id: u64,
) {
    if with_pool::<P, _>(key, |pool| pool.members.get(seat).map(|m| (m.token, m.id))).flatten()
        == Some((token, id))
    {
        reclaim::<P>(key, token, id);
    }
    dispatch::<P>(core, key);
    forget_if_empty::<P>(key);
}

/// Removes the member for connection (`token`, `id`), queueing what it had
/// not taken yet.
fn reclaim<P: Protocol>(key: &PoolKey, token: usize, id: u64) {
    let untaken = with_pool::<P, _>(key, |pool| {
        let seat = pool
            .members
            .iter()
            .find(|(_, m)| m.token == token && m.id == id)
            .map(|(seat, _)| seat)?;
        pool.idle.retain(|&s| s != seat);
        Some(pool.members.remove(seat).inbox)
    })
    .flatten()
    .unwrap_or_default();
    for item in untaken.into_iter().rev() {
        requeue(key, item);
    }
}

/// Puts `item` back at the front of the queue, without dispatching (a retry,
/// or a request its connection never took).
pub(super) fn requeue<P: Protocol>(key: &PoolKey, item: InFlight<P>) {
    push_waiting(key, item, true);
}

/// Adds `item` to the waiting queue, at the front or the back; returns
/// whether it was queued (a request with no pool left fails as cancelled).
fn push_waiting<P: Protocol>(key: &PoolKey, item: InFlight<P>, front: bool) -> bool {
    let mut item = Some(item);
    with_pool::<P, _>(key, |pool| {
        let Some(item) = item.take() else { return };
        pool.next_wait += 1;
        let waiting = Waiting {
            id: pool.next_wait,
            item,
            timer: None,
        };
        if front {
            pool.waiting.push_front(waiting);
        } else {
            pool.waiting.push_back(waiting);
        }
        pool.unarmed += 1;
    });
    match item {
        Some(item) => {
            item.fail(Error::Cancelled);
            false
        }
        None => true,
    }
}
