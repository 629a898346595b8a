//! Name resolution for client connections: resolver threads, a TTL cache, one
//! lookup in flight per name, and a deadline per waiter.
//!
//! `getaddrinfo` blocks, so it never runs on a poller or handler thread. It
//! runs on resolver threads started on demand (up to [`MAX_RESOLVERS`]; an
//! idle one exits after a minute), so one slow name never holds up another.
//! Every answer goes back to the poller that asked, on that poller's thread,
//! and a waiter whose lookup outlives its deadline fails there with
//! [`Error::DnsTimeout`] while the lookup goes on (its answer is still
//! cached). Results are kept for [`DNS_TTL`] (the system resolver does not
//! report record TTLs), at most 4,096 names.

use crate::error::Error;
use crate::poller::{self, Core, TimerKey};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a resolved name is reused.
pub const DNS_TTL: Duration = Duration::from_secs(60);

/// Most resolver threads at once.
const MAX_RESOLVERS: usize = 16;

/// Most names cached; past it expired entries go first, then all.
const CACHE_MAX: usize = 4096;

/// How long an idle resolver thread waits for work before it exits.
const RESOLVER_IDLE: Duration = Duration::from_secs(60);

/// What a waiter is told, on its poller: the address, and how long the lookup
/// took when one was made.
pub(crate) type Answer =
    Box<dyn FnOnce(&mut Core, Result<SocketAddr, Error>, Option<Duration>) + Send>;

type Name = (String, u16);

struct Waiter {
    id: u64,
    poller: usize,
    timer: TimerKey,
    asked: Instant,
    answer: Answer,
}

#[derive(Default)]
struct State {
    cache: HashMap<Name, (SocketAddr, Instant)>,
    in_flight: HashMap<Name, Vec<Waiter>>,
    next_id: u64,
    threads: usize,
    /// Resolver threads waiting for a name.
    idle: usize,
    /// Names sent to the resolvers and not yet taken by one.
    queued: usize,
}

fn state() -> &'static Mutex<State> {
    static STATE: OnceLock<Mutex<State>> = OnceLock::new();
    STATE.get_or_init(Default::default)
}

fn lock() -> std::sync::MutexGuard<'static, State> {
    state().lock().unwrap_or_else(|e| e.into_inner())
}

fn jobs() -> &'static (
    crossbeam_channel::Sender<Name>,
    crossbeam_channel::Receiver<Name>,
) {
    static JOBS: OnceLock<(
        crossbeam_channel::Sender<Name>,
        crossbeam_channel::Receiver<Name>,
    )> = OnceLock::new();
    JOBS.get_or_init(crossbeam_channel::unbounded)
}

/// Resolves `host:port` for the poller running on `core` and calls `answer`
/// there: at once for an IP literal or a cached name, else when a resolver
/// thread has the answer or `timeout` has passed, whichever comes first.
pub(crate) fn resolve(core: &mut Core, host: &str, port: u16, timeout: Duration, answer: Answer) {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return answer(core, Ok(SocketAddr::new(ip, port)), None);
    }
    let name = (host.to_string(), port);
    let mut st = lock();
    if let Some(&(addr, expires)) = st.cache.get(&name) {
        if expires > Instant::now() {
            drop(st);
            return answer(core, Ok(addr), None);
        }
        st.cache.remove(&name);
    }
    st.next_id += 1;
    let id = st.next_id;
    let timed_out = name.clone();
    let timer = core.add_timer(
        Instant::now() + timeout,
        Box::new(move |core, cancelled| {
            if !cancelled {
                expire(core, &timed_out, id, timeout);
            }
        }),
    );
    let first = !st.in_flight.contains_key(&name);
    st.in_flight.entry(name.clone()).or_default().push(Waiter {
        id,
        poller: core.index(),
        timer,
        asked: Instant::now(),
        answer,
    });
    if !first {
        return;
    }
    // Every name gets a thread of its own while there are threads to
    // start: one slow name never holds up another.
    st.queued += 1;
    let spawn = st.idle < st.queued && st.threads < MAX_RESOLVERS;
    if spawn {
        st.threads += 1;
    }
    let n = st.threads;
    let _ = jobs().0.send(name);
    drop(st);
    if spawn {
        start_resolver(n);
    }
}

/// A waiter's deadline passed before its answer came.
fn expire(core: &mut Core, name: &Name, id: u64, timeout: Duration) {
    let waiter = {
        let mut st = lock();
        let Some(waiters) = st.in_flight.get_mut(name) else {
            return;
        };
        let Some(at) = waiters.iter().position(|w| w.id == id) else {
            return;
        };
        waiters.swap_remove(at)
    };
    let err = Error::DnsTimeout(format!("{}: no answer within {timeout:?}", name.0));
    (waiter.answer)(core, Err(err), Some(waiter.asked.elapsed()));
}

fn start_resolver(n: usize) {
    let spawned = std::thread::Builder::new()
        .name(format!("tw-resolver-{n}"))
        .spawn(|| loop {
            lock().idle += 1;
            let job = jobs().1.recv_timeout(RESOLVER_IDLE);
            let mut st = lock();
            st.idle -= 1;
            match job {
                Ok((host, port)) => {
                    st.queued -= 1;
                    drop(st);
                    let res = lookup(&host, port);
                    finish((host, port), res);
                }
                // A name queued as we timed out (`resolve` counted us idle
                // and sent it under the lock we now hold): stay for it.
                Err(_) if !jobs().1.is_empty() => {}
                Err(_) => {
                    st.threads -= 1;
                    return;
                }
            }
        });
    if let Err(e) = spawned {
        log::error!("taskweave: cannot start a resolver thread: {e}");
        lock().threads -= 1;
    }
}

fn lookup(host: &str, port: u16) -> Result<SocketAddr, Error> {
    #[cfg(test)]
    if let Some(res) = tests::simulated(host) {
        return res;
    }
    let mut addrs = (host, port)
        .to_socket_addrs()
        .map_err(|e| Error::Dns(format!("{host}: {e}")))?;
    addrs
        .next()
        .ok_or_else(|| Error::Dns(format!("{host}: no addresses")))
}

/// Hands a lookup's result to every waiter still waiting, each on its poller.
fn finish(name: Name, res: Result<SocketAddr, Error>) {
    let waiters = {
        let mut st = lock();
        if let Ok(addr) = &res {
            let now = Instant::now();
            if st.cache.len() >= CACHE_MAX {
                st.cache.retain(|_, &mut (_, expires)| expires > now);
                if st.cache.len() >= CACHE_MAX {
                    st.cache.clear();
                }
            }
            st.cache.insert(name.clone(), (*addr, now + DNS_TTL));
        }
        st.in_flight.remove(&name).unwrap_or_default()
    };
    for w in waiters {
        let res = res.clone();
        let took = w.asked.elapsed();
        poller::run_on(w.poller, move |core| {
            core.cancel_timer(w.timer);
            (w.answer)(core, res, Some(took));
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    static RUNNING: AtomicUsize = AtomicUsize::new(0);
    static MOST: AtomicUsize = AtomicUsize::new(0);

    /// Names `test-sleep-<ms>-<tag>` stand for a resolver that answers
    /// after `ms` (with an error); they count how many run at once.
    pub(super) fn simulated(host: &str) -> Option<Result<SocketAddr, Error>> {
        let ms: u64 = host
            .strip_prefix("test-sleep-")?
            .split('-')
            .next()?
            .parse()
            .ok()?;
        let now = RUNNING.fetch_add(1, Ordering::SeqCst) + 1;
        MOST.fetch_max(now, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(ms));
        RUNNING.fetch_sub(1, Ordering::SeqCst);
        Some(Err(Error::Dns(format!("{host}: simulated"))))
    }

    /// Resolves `names` from a poller, waiting for every answer.
    fn resolve_all(names: &[&str]) {
        let (tx, rx) = crossbeam_channel::unbounded();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let count = names.len();
        poller::run_on(0, move |core| {
            for name in names {
                let tx = tx.clone();
                let answer: Answer = Box::new(move |_, res, _| {
                    let _ = tx.send(res.is_err());
                });
                resolve(core, &name, 80, Duration::from_secs(10), answer);
            }
        });
        for _ in 0..count {
            assert!(rx.recv_timeout(Duration::from_secs(10)).is_ok());
        }
    }

    /// Two slow names asked for back to back while a resolver thread sits
    /// idle are looked up side by side: the second does not queue behind
    /// the first on the one idle thread.
    #[test]
    fn a_slow_name_never_holds_up_another() {
        resolve_all(&["test-sleep-0-warm"]);
        std::thread::sleep(Duration::from_millis(50)); // the thread is idle
        MOST.store(0, Ordering::SeqCst);
        resolve_all(&["test-sleep-300-a", "test-sleep-300-b"]);
        assert_eq!(
            MOST.load(Ordering::SeqCst),
            2,
            "the lookups ran one after another"
        );
    }
}
