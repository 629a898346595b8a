//! The seam between the connection engines and the layer above them.
//!
//! `comm` knows connections and bytes; what a request *means* (a series of
//! tasks, a `process` callback) belongs to `task`. A server connection reaches
//! it only through [`Service`] and [`Exchange`], and a client connection
//! through [`Job`], so `comm` never imports the layer above: like hyper's
//! `Dispatch` between its connection and the user's service.

use super::client::{JobInfo, Target};
use super::reply::Reply;
use super::ClientConfig;
use crate::error::Error;
use crate::protocol::Protocol;

/// What a server needs from the layer above: somewhere to put each request,
/// and a place to run callbacks. Generic, not a trait object: the exchange is
/// parsed into on every read, and static calls keep a request's path short.
pub(crate) trait Service<P: Protocol>: Send + Sync + Sized + 'static {
    /// What a request is parsed into and run as.
    type Exchange: Exchange<P, Self>;

    /// A new exchange for a request whose first byte just arrived; the request
    /// is parsed into it in place.
    fn receive(&self, proto: &P) -> Box<Self::Exchange>;

    /// Whether [`Exchange::run`] runs the request on the calling (poller)
    /// thread, so that a reply can come back before it returns.
    fn inline(&self) -> bool;

    /// Runs a user callback (a stream's writable callback) where the layer
    /// above runs callbacks.
    fn defer(&self, f: Box<dyn FnOnce() + Send>);
}

/// One request on its way through the layer above.
pub(crate) trait Exchange<P: Protocol, S: Service<P>>: Send + 'static {
    /// The request being parsed.
    fn request_mut(&mut self) -> &mut P::Request;

    /// The request, complete: run it. It is answered through `reply` (or, if
    /// the exchange is dropped unanswered, the connection answers 500 and
    /// closes).
    fn run(self: Box<Self>, reply: Reply<P, S>);

    /// The request was answered without running it (it came over the
    /// server's request rate): keep the exchange for the next request, or
    /// drop it (the default).
    fn recycle(self: Box<Self>) {}
}

/// One client request on its way through a connection. It carries what the
/// connection learns of it (its [`JobInfo`]), so that moving a request
/// between the pool's queue and a connection moves a pointer.
pub(crate) trait Job<P: Protocol>: Send + 'static {
    /// The protocol the request was made with (its limits parse the reply).
    fn proto(&self) -> &P;

    /// The request.
    fn request(&self) -> &P::Request;

    /// The request, to encode it.
    fn request_mut(&mut self) -> &mut P::Request;

    /// Where the connection notes the request's timings and fate.
    fn info_mut(&mut self) -> &mut JobInfo;

    /// What the connection noted.
    fn info(&self) -> &JobInfo;

    /// The config the request was submitted with (its access log).
    fn config(&self) -> &ClientConfig;

    /// Where the request goes.
    fn target(&self) -> &Target;

    /// Where pushes go from the connection this request is sent on: a
    /// subscriber's request installs its handler on the connection.
    fn take_push_handler(&mut self) -> Option<PushHandler<P>> {
        None
    }

    /// The request's outcome (on the connection's poller thread); its
    /// [`JobInfo`] is final.
    fn complete(self: Box<Self>, result: Result<P::Response, Error>);
}

/// Receives the push messages of a connection (see `Protocol::is_push`).
pub(crate) type PushHandler<P> = Box<dyn FnMut(<P as Protocol>::Response) + Send>;
