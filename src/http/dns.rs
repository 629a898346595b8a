//! Name resolution on resolver threads, with a TTL cache and one lookup in flight
//! per name.
//!
//! `getaddrinfo` blocks, so it never runs on a poller or handler thread. Results
//! are cached for a fixed TTL (the system resolver does not report record TTLs);
//! concurrent lookups of the same name wait for the one in flight.

use crate::error::Error;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a resolved name is reused.
pub const DNS_TTL: Duration = Duration::from_secs(60);
const RESOLVER_THREADS: usize = 2;

type Reply = Box<dyn FnOnce(Result<SocketAddr, Error>) + Send>;

#[derive(Default)]
struct State {
    cache: HashMap<(String, u16), (SocketAddr, Instant)>,
    in_flight: HashMap<(String, u16), Vec<Reply>>,
}

fn state() -> &'static Mutex<State> {
    static STATE: OnceLock<Mutex<State>> = OnceLock::new();
    STATE.get_or_init(Default::default)
}

fn jobs() -> &'static crossbeam_channel::Sender<(String, u16)> {
    static JOBS: OnceLock<crossbeam_channel::Sender<(String, u16)>> = OnceLock::new();
    JOBS.get_or_init(|| {
        let (tx, rx) = crossbeam_channel::unbounded::<(String, u16)>();
        for i in 0..RESOLVER_THREADS {
            let rx = rx.clone();
            let _ = std::thread::Builder::new()
                .name(format!("tw-resolver-{i}"))
                .spawn(move || {
                    for (host, port) in rx {
                        let res = lookup(&host, port);
                        finish(host, port, res);
                    }
                });
        }
        tx
    })
}

fn lookup(host: &str, port: u16) -> Result<SocketAddr, Error> {
    let mut addrs = (host, port)
        .to_socket_addrs()
        .map_err(|e| Error::Dns(format!("{host}: {e}")))?;
    addrs
        .next()
        .ok_or_else(|| Error::Dns(format!("{host}: no addresses")))
}

fn finish(host: String, port: u16, res: Result<SocketAddr, Error>) {
    let waiters = {
        let mut st = state().lock().unwrap_or_else(|e| e.into_inner());
        if let Ok(addr) = &res {
            st.cache
                .insert((host.clone(), port), (*addr, Instant::now() + DNS_TTL));
        }
        st.in_flight.remove(&(host, port)).unwrap_or_default()
    };
    for reply in waiters {
        reply(res.clone());
    }
}

/// Resolves `host:port` and calls `reply` (on this thread when the answer is
/// immediate: an IP literal or a cached name; else on a resolver thread). The
/// boolean says whether a lookup was made, for the access log's `dns_us`.
pub(crate) fn resolve(
    host: &str,
    port: u16,
    reply: impl FnOnce(Result<SocketAddr, Error>, bool) + Send + 'static,
) {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return reply(Ok(SocketAddr::new(ip, port)), false);
    }
    let key = (host.to_string(), port);
    let mut st = state().lock().unwrap_or_else(|e| e.into_inner());
    if let Some(&(addr, expires)) = st.cache.get(&key) {
        if expires > Instant::now() {
            drop(st);
            return reply(Ok(addr), false);
        }
        st.cache.remove(&key);
    }
    let first = !st.in_flight.contains_key(&key);
    st.in_flight
        .entry(key.clone())
        .or_default()
        .push(Box::new(move |res| reply(res, true)));
    drop(st);
    if first && jobs().send(key.clone()).is_err() {
        finish(key.0, key.1, Err(Error::Dns("resolver unavailable".into())));
    }
}
