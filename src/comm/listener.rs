//! Accepting connections: `max_connections`, eviction, and EMFILE without spinning.

use crate::poller::{Core, Flow, Handler, QueueKey, Ready};
use mio::net::{TcpListener, TcpStream};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// How long a listener waits before accepting again when out of descriptors and
/// no spare descriptor could be freed.
const EMFILE_BACKOFF: Duration = Duration::from_millis(100);

/// How many connections an accept at the limit may close to make room before
/// it refuses.
const EVICTION_TRIES: usize = 4;

/// What a listener needs from the server it accepts for.
pub(crate) trait Acceptor: Send + Sync + 'static {
    /// The server's group id (its deadline queues).
    fn group(&self) -> u32;
    /// The server is shutting down: stop accepting.
    fn stopped(&self) -> bool;
    /// Takes a connection slot; `false` at `max_connections`.
    fn try_admit(&self) -> bool;
    /// The deadline queue holding this server's idle keep-alive connections, oldest
    /// first: the eviction order.
    fn idle_key(&self) -> QueueKey;
    /// Registers an accepted connection on this poller (its slot is taken).
    fn open(self: Arc<Self>, core: &mut Core, stream: TcpStream, peer: SocketAddr);
    /// Closes a connection refused at the limit (no slot was taken).
    fn refuse(&self, stream: TcpStream, peer: SocketAddr);
}

/// A listening socket on one poller.
pub(crate) struct Listener {
    listener: TcpListener,
    acceptor: Arc<dyn Acceptor>,
}

impl Listener {
    pub fn new(listener: TcpListener, acceptor: Arc<dyn Acceptor>) -> Listener {
        Listener { listener, acceptor }
    }

    fn backoff_key(&self) -> QueueKey {
        QueueKey {
            dur: EMFILE_BACKOFF,
            group: self.acceptor.group(),
            kind: u8::MAX,
        }
    }

    fn accept_all(&mut self, token: usize, core: &mut Core) -> Flow {
        loop {
            match self.listener.accept() {
                Ok((stream, peer)) => self.admit(core, stream, peer),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Flow::Keep,
                Err(e) if crate::sys::process::is_fd_exhaustion(&e) => {
                    // Free the spare descriptor, take the waiting connection and
                    // close it, so the backlog drains instead of waking us forever.
                    let acceptor = &self.acceptor;
                    let listener = &self.listener;
                    // The shed socket must be closed inside the window, before
                    // the spare is taken back.
                    let shed = crate::sys::process::with_spare_fd_released(|| {
                        listener
                            .accept()
                            .map(|(stream, peer)| acceptor.refuse(stream, peer))
                    });
                    if !matches!(shed, Some(Ok(()))) {
                        log::warn!("taskweave: out of file descriptors, accept paused");
                        core.arm(token, self.backoff_key());
                        return Flow::Keep;
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted
                            | io::ErrorKind::ConnectionAborted
                            | io::ErrorKind::ConnectionReset
                    ) => {}
                Err(e) => {
                    log::warn!("taskweave: accept failed: {e}; retrying shortly");
                    core.arm(token, self.backoff_key());
                    return Flow::Keep;
                }
            }
        }
    }

    fn admit(&mut self, core: &mut Core, stream: TcpStream, peer: SocketAddr) {
        if !self.acceptor.try_admit() && !self.make_room(core) {
            self.acceptor.refuse(stream, peer);
            return;
        }
        self.acceptor.clone().open(core, stream, peer);
    }

    /// Makes room by closing the oldest idle keep-alive connection here and
    /// admits. A connection in that queue that turns out not to be idle (its
    /// answer is still being written) leaves the queue when asked, or goes to
    /// its back (its answer has just come), so the next oldest is tried.
    /// Requests in flight on handler threads wait in that queue too
    /// (`Wait::Answer`), ahead of idle connections answered after them: each
    /// leaves it when asked (so the loop ends, and it is not asked again
    /// before its next request), and is not counted; at most
    /// `EVICTION_TRIES` connections are closed (another poller may take the
    /// slots they free).
    #[cold]
    fn make_room(&mut self, core: &mut Core) -> bool {
        let key = self.acceptor.idle_key();
        let mut evicted = 0;
        loop {
            let Some(oldest) = core.oldest(key) else {
                return false;
            };
            core.cancel(oldest);
            if self.acceptor.try_admit() {
                return true;
            }
            if core.id_of(oldest).is_none() {
                evicted += 1;
                if evicted == EVICTION_TRIES {
                    return false;
                }
            } else if core.oldest(key) == Some(oldest) {
                return false;
            }
        }
    }
}

impl Handler for Listener {
    fn ready(&mut self, token: usize, core: &mut Core, _ready: Ready) -> Flow {
        self.accept_all(token, core)
    }

    fn timeout(&mut self, token: usize, core: &mut Core) -> Flow {
        self.accept_all(token, core)
    }

    /// Woken when its server shuts down: stop listening.
    fn wake(&mut self, _token: usize, core: &mut Core) -> Flow {
        if self.acceptor.stopped() {
            let _ = core.registry().deregister(&mut self.listener);
            return Flow::Remove;
        }
        Flow::Keep
    }

    fn cancel(&mut self, _token: usize, _core: &mut Core) -> Flow {
        Flow::Keep
    }
}
