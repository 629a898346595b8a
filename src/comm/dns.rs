//! Name resolution for client connections: resolver threads, a TTL cache, one
//! lookup in flight per name, and a deadline per waiter.
//!
//! `getaddrinfo` blocks, so it never runs on a poller or handler thread. It
//! runs on resolver threads started on demand (up to [`MAX_RESOLVERS`]; an
//! idle one exits after a minute), so one slow name never holds up another.
//! Every answer goes back to the poller that asked, on that poller's thread,
//! and a waiter whose lookup outlives its deadline fails there with
//! [`Error::DnsTimeout`] while the lookup goes on (its answer is still
//! cached).
//!
//! An answer is every address the name resolved to, in the resolver's order
//! (a client connect tries each in turn). A waiter takes a cached answer
//! younger than its config's TTL (`ClientConfig::dns_ttl`, default
//! [`DNS_TTL`]: the system resolver does not report record TTLs). Entries no
//! config still wants are swept out at most once a second, and the cache
//! holds at most [`CACHE_MAX`] names: past it, those closest to expiry go.

use crate::error::Error;
use crate::poller::{self, Core, TimerKey};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a resolved name is reused by default (the default of
/// [`ClientConfig::dns_ttl`](super::ClientConfig::dns_ttl)).
pub const DNS_TTL: Duration = Duration::from_secs(60);

/// Most resolver threads at once.
const MAX_RESOLVERS: usize = 16;

/// Most names cached.
const CACHE_MAX: usize = 4096;

/// How often the cache is swept of entries no config wants any more.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// How long an idle resolver thread waits for work before it exits.
const RESOLVER_IDLE: Duration = Duration::from_secs(60);

/// The addresses a name resolved to, in the resolver's order; never empty.
pub(crate) type Addrs = Arc<[SocketAddr]>;

/// What a waiter is told, on its poller: the addresses, and how long the
/// lookup took when one was made.
pub(crate) type Answer = Box<dyn FnOnce(&mut Core, Result<Addrs, Error>, Option<Duration>) + Send>;

type Name = (String, u16);

struct Waiter {
    id: u64,
    poller: usize,
    timer: TimerKey,
    asked: Instant,
    answer: Answer,
}

/// A lookup in flight: who waits for it, and how long its answer is to be
/// kept (the longest TTL of everyone who asked, gone or not).
#[derive(Default)]
struct Lookup {
    waiters: Vec<Waiter>,
    ttl: Duration,
}

/// `t + d`, or `t` plus a year when `d` is too long to add (`Duration::MAX`
/// means "for good").
fn later(t: Instant, d: Duration) -> Instant {
    const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);
    t.checked_add(d)
        .or_else(|| t.checked_add(YEAR))
        .unwrap_or(t)
}

struct Entry {
    addrs: Addrs,
    resolved: Instant,
    /// When no config that asked for this name would take it any more.
    keep_until: Instant,
}

/// Resolved names, each kept while some config's TTL still covers it, at
/// most `max` of them.
struct Cache {
    map: HashMap<Name, Entry>,
    max: usize,
    next_sweep: Instant,
}

impl Cache {
    fn new(max: usize) -> Cache {
        Cache {
            map: HashMap::new(),
            max: max.max(1),
            next_sweep: Instant::now(),
        }
    }

    /// The answer for `name`, if it is younger than `ttl`.
    fn get(&mut self, name: &Name, ttl: Duration, now: Instant) -> Option<Addrs> {
        let entry = self.map.get_mut(name)?;
        if now.saturating_duration_since(entry.resolved) >= ttl {
            return None;
        }
        entry.keep_until = entry.keep_until.max(later(entry.resolved, ttl));
        Some(entry.addrs.clone())
    }

    /// Keeps `addrs` for `name` for `ttl`, in place of an older answer (a
    /// fresh answer is worth having even to a config with a zero TTL: one
    /// with a longer TTL may take it meanwhile).
    fn insert(&mut self, name: Name, addrs: Addrs, ttl: Duration, now: Instant) {
        self.sweep_if_due(now);
        if self.map.len() >= self.max && !self.map.contains_key(&name) {
            self.make_room(now);
        }
        let keep_until = later(now, ttl);
        self.map.insert(
            name,
            Entry {
                addrs,
                resolved: now,
                keep_until,
            },
        );
    }

    /// Removes the entries no config wants any more, once a [`SWEEP_EVERY`].
    fn sweep_if_due(&mut self, now: Instant) {
        if now >= self.next_sweep {
            self.map.retain(|_, e| e.keep_until > now);
            self.next_sweep = later(now, SWEEP_EVERY);
        }
    }

    /// The cache is full: expired entries go, and if that is not enough, the
    /// eighth of the entries closest to expiry (so that the next names find
    /// room without another scan).
    fn make_room(&mut self, now: Instant) {
        self.map.retain(|_, e| e.keep_until > now);
        if self.map.len() < self.max {
            return;
        }
        let mut ends: Vec<Instant> = self.map.values().map(|e| e.keep_until).collect();
        let n = (self.max / 8).max(1) + (self.map.len() - self.max);
        let at = n.min(ends.len()) - 1;
        let (_, cut, _) = ends.select_nth_unstable(at);
        let cut = *cut;
        self.map.retain(|_, e| e.keep_until > cut);
    }
}

struct State {
    cache: Cache,
    in_flight: HashMap<Name, Lookup>,
    next_id: u64,
    threads: usize,
    /// Resolver threads waiting for a name.
    idle: usize,
    /// Names sent to the resolvers and not yet taken by one.
    queued: usize,
}

fn state() -> &'static Mutex<State> {
    static STATE: OnceLock<Mutex<State>> = OnceLock::new();
    STATE.get_or_init(|| {
        Mutex::new(State {
            cache: Cache::new(CACHE_MAX),
            in_flight: HashMap::new(),
            next_id: 0,
            threads: 0,
            idle: 0,
            queued: 0,
        })
    })
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
/// there: at once for an IP literal or a name cached less than `ttl` ago,
/// else when a resolver thread has the answer or `timeout` has passed,
/// whichever comes first.
pub(crate) fn resolve(
    core: &mut Core,
    host: &str,
    port: u16,
    ttl: Duration,
    timeout: Duration,
    answer: Answer,
) {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return answer(core, Ok(Arc::from([SocketAddr::new(ip, port)])), None);
    }
    let name = (host.to_string(), port);
    let now = Instant::now();
    let mut st = lock();
    st.cache.sweep_if_due(now);
    if let Some(addrs) = st.cache.get(&name, ttl, now) {
        drop(st);
        return answer(core, Ok(addrs), None);
    }
    st.next_id += 1;
    let id = st.next_id;
    let timed_out = name.clone();
    let timer = core.add_timer(
        later(now, timeout),
        Box::new(move |core, cancelled| {
            if !cancelled {
                expire(core, &timed_out, id, timeout);
            }
        }),
    );
    let first = !st.in_flight.contains_key(&name);
    let lookup = st.in_flight.entry(name.clone()).or_default();
    lookup.ttl = lookup.ttl.max(ttl);
    lookup.waiters.push(Waiter {
        id,
        poller: core.index(),
        timer,
        asked: now,
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
        let Some(lookup) = st.in_flight.get_mut(name) else {
            return;
        };
        let Some(at) = lookup.waiters.iter().position(|w| w.id == id) else {
            return;
        };
        lookup.waiters.swap_remove(at)
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

/// Every address `host` resolves to, in the resolver's order, each once.
fn lookup(host: &str, port: u16) -> Result<Addrs, Error> {
    #[cfg(test)]
    if let Some(res) = tests::simulated(host, port) {
        return res;
    }
    let mut addrs: Vec<SocketAddr> = Vec::new();
    let found = (host, port)
        .to_socket_addrs()
        .map_err(|e| Error::Dns(format!("{host}: {e}")))?;
    for addr in found {
        if !addrs.contains(&addr) {
            addrs.push(addr);
        }
    }
    if addrs.is_empty() {
        return Err(Error::Dns(format!("{host}: no addresses")));
    }
    Ok(addrs.into())
}

/// Hands a lookup's result to every waiter still waiting, each on its poller.
fn finish(name: Name, res: Result<Addrs, Error>) {
    let waiters = {
        let mut st = lock();
        let lookup = st.in_flight.remove(&name).unwrap_or_default();
        if let Ok(addrs) = &res {
            st.cache
                .insert(name, addrs.clone(), lookup.ttl, Instant::now());
        }
        lookup.waiters
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

    /// Lookups made per `test-count-*` name.
    fn counts() -> &'static Mutex<HashMap<String, usize>> {
        static COUNTS: OnceLock<Mutex<HashMap<String, usize>>> = OnceLock::new();
        COUNTS.get_or_init(Default::default)
    }

    fn lookups_of(host: &str) -> usize {
        let counts = counts().lock().unwrap_or_else(|e| e.into_inner());
        counts.get(host).copied().unwrap_or(0)
    }

    /// Names `test-sleep-<ms>-<tag>` stand for a resolver that answers
    /// after `ms` (with an error); they count how many run at once.
    /// `test-hang-<ms>-<tag>` is the same, uncounted. Names
    /// `test-count-<tag>` resolve to 127.0.0.1 and 127.0.0.2, counting the
    /// lookups made.
    pub(super) fn simulated(host: &str, port: u16) -> Option<Result<Addrs, Error>> {
        if host.starts_with("test-count-") {
            let mut counts = counts().lock().unwrap_or_else(|e| e.into_inner());
            *counts.entry(host.to_string()).or_default() += 1;
            let addrs = [[127, 0, 0, 1], [127, 0, 0, 2]].map(|ip| SocketAddr::from((ip, port)));
            return Some(Ok(Arc::from(addrs)));
        }
        if let Some(ms) = host.strip_prefix("test-hang-").and_then(millis) {
            std::thread::sleep(Duration::from_millis(ms));
            return Some(Err(Error::Dns(format!("{host}: simulated"))));
        }
        let ms = millis(host.strip_prefix("test-sleep-")?)?;
        let now = RUNNING.fetch_add(1, Ordering::SeqCst) + 1;
        MOST.fetch_max(now, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(ms));
        RUNNING.fetch_sub(1, Ordering::SeqCst);
        Some(Err(Error::Dns(format!("{host}: simulated"))))
    }

    /// The `<ms>` of `<ms>-<tag>`.
    fn millis(rest: &str) -> Option<u64> {
        rest.split('-').next()?.parse().ok()
    }

    /// What a waiter was told: the addresses or error, and the lookup time.
    type Told = (Result<Addrs, Error>, Option<Duration>);

    /// Resolves `name` from a poller with `ttl` and `timeout`; the receiver
    /// gets the answer.
    fn ask(name: &str, ttl: Duration, timeout: Duration) -> crossbeam_channel::Receiver<Told> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let name = name.to_string();
        poller::run_on(0, move |core| {
            let answer: Answer = Box::new(move |_, res, took| {
                let _ = tx.send((res, took));
            });
            resolve(core, &name, 80, ttl, timeout, answer);
        });
        rx
    }

    fn told(rx: &crossbeam_channel::Receiver<Told>) -> Told {
        rx.recv_timeout(Duration::from_secs(10))
            .expect("no answer within 10 s")
    }

    /// Resolves `names` from a poller, waiting for every answer.
    fn resolve_all(names: &[&str]) {
        let asked: Vec<_> = names
            .iter()
            .map(|n| ask(n, DNS_TTL, Duration::from_secs(10)))
            .collect();
        for rx in &asked {
            let _ = told(rx);
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

    /// An answer is every address, in order; it is reused while younger
    /// than the asker's TTL and looked up again after.
    #[test]
    fn answers_are_reused_within_the_ttl_and_looked_up_again_after() {
        let name = "test-count-ttl";
        let ttl = Duration::from_millis(300);
        let (res, took) = told(&ask(name, ttl, Duration::from_secs(10)));
        let want: Vec<SocketAddr> = vec![
            "127.0.0.1:80".parse().unwrap(),
            "127.0.0.2:80".parse().unwrap(),
        ];
        assert_eq!(res.as_deref(), Ok(&want[..]));
        assert!(took.is_some(), "the first answer came from a lookup");
        let (res, took) = told(&ask(name, ttl, Duration::from_secs(10)));
        assert_eq!(res.as_deref(), Ok(&want[..]));
        assert_eq!(took, None, "within the TTL the answer is cached");
        assert_eq!(lookups_of(name), 1);
        std::thread::sleep(ttl + Duration::from_millis(50));
        let (res, took) = told(&ask(name, ttl, Duration::from_secs(10)));
        assert!(res.is_ok() && took.is_some(), "{res:?} {took:?}");
        assert_eq!(
            lookups_of(name),
            2,
            "past the TTL the name is looked up again"
        );
        // A config with a shorter TTL does not take an answer older than it.
        std::thread::sleep(Duration::from_millis(60));
        let (_, took) = told(&ask(
            name,
            Duration::from_millis(50),
            Duration::from_secs(10),
        ));
        assert!(took.is_some());
        assert_eq!(lookups_of(name), 3);
    }

    /// A TTL of zero never caches.
    #[test]
    fn a_zero_ttl_looks_up_every_time() {
        let name = "test-count-zero";
        for _ in 0..3 {
            let (res, took) = told(&ask(name, Duration::ZERO, Duration::from_secs(10)));
            assert!(res.is_ok() && took.is_some(), "{res:?} {took:?}");
        }
        assert_eq!(lookups_of(name), 3);
    }

    /// A lookup slower than the timeout fails its waiter with `DnsTimeout`
    /// at the deadline, and the poller goes on meanwhile.
    #[test]
    fn a_lookup_past_its_timeout_fails_without_holding_up_the_poller() {
        let start = Instant::now();
        let rx = ask(
            "test-hang-1500-timeout",
            DNS_TTL,
            Duration::from_millis(200),
        );
        // The poller that asked answers a command at once meanwhile.
        let (tx, ping) = crossbeam_channel::bounded(1);
        poller::run_on(0, move |_| {
            let _ = tx.send(Instant::now());
        });
        let pinged = ping
            .recv_timeout(Duration::from_secs(1))
            .expect("the poller did not run a command while a lookup was under way");
        assert!(
            pinged - start < Duration::from_millis(150),
            "{:?}",
            pinged - start
        );
        let (res, took) = told(&rx);
        let waited = start.elapsed();
        assert!(
            matches!(&res, Err(Error::DnsTimeout(m)) if m.contains("test-hang-1500-timeout")),
            "{res:?}"
        );
        assert!(
            waited >= Duration::from_millis(200) && waited < Duration::from_millis(1000),
            "failed after {waited:?}, the lookup takes 1.5 s and the timeout is 200 ms"
        );
        assert!(
            took.is_some_and(|t| t >= Duration::from_millis(200)),
            "{took:?}"
        );
    }

    fn name(n: usize) -> Name {
        (format!("n{n}"), 80)
    }

    fn addrs() -> Addrs {
        Arc::from([SocketAddr::from(([127, 0, 0, 1], 80))])
    }

    /// The sweep removes what no config wants any more, and only that.
    #[test]
    fn the_sweep_removes_expired_entries() {
        let mut cache = Cache::new(100);
        let t0 = Instant::now();
        cache.insert(name(1), addrs(), Duration::from_secs(1), t0);
        cache.insert(name(2), addrs(), Duration::from_secs(10), t0);
        // A config with a longer TTL keeps an entry for longer.
        assert!(cache.get(&name(1), Duration::from_secs(5), t0).is_some());
        cache.sweep_if_due(t0 + Duration::from_secs(3));
        assert_eq!(cache.map.len(), 2, "both are still wanted");
        assert!(cache
            .get(
                &name(1),
                Duration::from_secs(1),
                t0 + Duration::from_secs(3)
            )
            .is_none());
        cache.sweep_if_due(t0 + Duration::from_secs(6));
        assert!(!cache.map.contains_key(&name(1)));
        assert!(cache.map.contains_key(&name(2)));
        cache.sweep_if_due(t0 + Duration::from_secs(11));
        assert!(cache.map.is_empty());
    }

    /// The cache never holds more than its bound: expired entries go first,
    /// then those closest to expiry; the newest is always kept.
    #[test]
    fn the_cache_is_bounded() {
        let mut cache = Cache::new(16);
        let t0 = Instant::now();
        for n in 0..16 {
            cache.insert(name(n), addrs(), Duration::from_millis(10), t0);
        }
        // All expired: they make room, without a sweep being due.
        cache.next_sweep = t0 + Duration::from_secs(60);
        let t1 = t0 + Duration::from_millis(20);
        cache.insert(name(100), addrs(), Duration::from_secs(60), t1);
        assert_eq!(cache.map.len(), 1);
        for n in 0..1000 {
            let ttl = Duration::from_secs(60 + n as u64);
            cache.insert(name(200 + n), addrs(), ttl, t1);
            assert!(cache.map.len() <= 16, "{} entries", cache.map.len());
            assert!(cache.map.contains_key(&name(200 + n)));
        }
        // Those closest to expiry went: the longest-lived are still there.
        assert!(cache.map.contains_key(&name(1199)));
        assert!(!cache.map.contains_key(&name(200)));
    }
}
