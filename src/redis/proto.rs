//! The Redis [`Protocol`]: requests of one or more commands, replies counted
//! in order, pushes set aside, and the greeting a new connection sends.
//!
//! A [`Request`] is a pipeline: its commands are encoded once, go out in one
//! write, and its [`Reply`] is complete when one value per command (one per
//! channel for a subscription) has arrived. The engine matches replies to
//! requests in order, so a reply can only go to the wrong request if the
//! count is wrong: every command that would break the count, or leave a
//! shared connection in a state other requests do not expect, is refused
//! before it is sent (see [`Redis::check_request`]).

use super::encode::encode_command;
use super::parse::{Limits, Parser};
use super::url::Url;
use super::Value;
use crate::protocol::{Message, MessageSizes, Progress, Protocol, ProtocolError};
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::hash::{Hash, Hasher};

/// Code of a [`ProtocolError`] for a reply that is not RESP.
pub const MALFORMED_REPLY: u16 = 502;
/// Code of a [`ProtocolError`] for a greeting (`HELLO`, `AUTH`, `SELECT`)
/// the server refused.
pub const GREETING_REFUSED: u16 = 401;
/// Code of a [`ProtocolError`] for a request refused before it was sent.
pub const REFUSED_COMMAND: u16 = 400;

/// What a connection of this protocol is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Role {
    /// Commands from many tasks, pipelined on shared connections.
    Commands,
    /// One subscriber's own connection: messages come unasked.
    Subscriber,
}

/// The Redis protocol for one URL: its greeting, its limits, and which
/// connections it may share.
#[derive(Debug, Clone)]
pub struct Redis {
    url: Url,
    limits: Limits,
    role: Role,
    max_in_flight: usize,
    /// Makes a subscriber's connections its own.
    salt: u64,
    class: u64,
}

impl Redis {
    /// The protocol for connections to `url`, with default limits and up to
    /// 1,024 requests in flight on one connection.
    pub fn new(url: Url) -> Redis {
        Redis::with_role(url, Role::Commands, 0)
    }

    pub(crate) fn with_role(url: Url, role: Role, salt: u64) -> Redis {
        let mut proto = Redis {
            url,
            limits: Limits::default(),
            role,
            max_in_flight: 1024,
            salt,
            class: 0,
        };
        proto.class = proto.compute_class();
        proto
    }

    /// Bounds on replies (nesting, element counts, blob and line lengths).
    pub fn limits(mut self, limits: Limits) -> Redis {
        self.limits = limits;
        self.class = self.compute_class();
        self
    }

    /// Most requests in flight on one connection (at least 1).
    pub fn max_in_flight(mut self, n: usize) -> Redis {
        self.max_in_flight = n.max(1);
        self.class = self.compute_class();
        self
    }

    /// The URL.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// Connections with other credentials, database, protocol version,
    /// role or settings are not interchangeable (a pool takes its depth and
    /// limits from the protocol that made it).
    fn compute_class(&self) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        let settings = (self.limits, self.max_in_flight);
        (&self.url, self.role, self.salt, settings).hash(&mut h);
        h.finish()
    }

    fn error(code: u16, why: impl Into<String>) -> ProtocolError {
        ProtocolError::new(code, why.into())
    }
}

/// Commands that would break reply counting or leave a shared connection in
/// a state the next request does not expect, and what to use instead.
fn refused(role: Role, name: &[u8], second: Option<&[u8]>, argc: usize) -> Option<&'static str> {
    let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
    if name.is_empty() && argc == 0 {
        return Some("an empty command");
    }
    if role == Role::Subscriber {
        if SUBSCRIPTIONS.iter().any(|n| is(n)) {
            return (argc < 2).then_some("name the channels");
        }
        // QUIT is how `SubscriberHandle::stop` closes the connection.
        return (!is("PING") && !is("QUIT"))
            .then_some("a subscriber connection takes only (un)subscriptions, PING and QUIT");
    }
    if SUBSCRIPTIONS.iter().any(|n| is(n)) {
        return Some("subscriptions need their own connection: use redis::Subscriber");
    }
    if is("MONITOR") || is("SYNC") || is("PSYNC") {
        return Some("it takes over its connection");
    }
    if is("QUIT") {
        return Some("the pool closes shared connections; QUIT would fail the commands behind it");
    }
    if is("READONLY") || is("READWRITE") {
        return Some("connection state would leak to the next task");
    }
    if (is("HELLO") && argc > 1) || is("AUTH") || is("SELECT") || is("RESET") {
        return Some("connection state comes from the URL (user, password, database, protocol)");
    }
    let client_sub = |n: &str| second.is_some_and(|a| a.eq_ignore_ascii_case(n.as_bytes()));
    if is("CLIENT") && (client_sub("REPLY") || client_sub("TRACKING")) {
        return Some("CLIENT REPLY and CLIENT TRACKING change what a shared connection answers");
    }
    if is("CLIENT")
        && ["SETNAME", "NO-EVICT", "NO-TOUCH", "SETINFO"]
            .iter()
            .any(|n| client_sub(n))
    {
        return Some("connection state would leak to the next task");
    }
    None
}

/// A pipeline of commands, encoded once and written in one go.
///
/// ```
/// use taskweave::redis::Request;
///
/// let mut req = Request::new();
/// req.add(["SET", "k", "v"]).add(["GET", "k"]);
/// assert_eq!(req.len(), 2);
/// ```
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// Why the request cannot be sent at all (a bad URL), if so.
    invalid: Option<String>,
    wire: BytesMut,
    frozen: Option<Bytes>,
    len: usize,
    /// Replies expected: one per command, one per channel for a
    /// (un)subscription.
    replies: usize,
    /// Of those, how many are subscription confirmations (RESP3 sends them
    /// as pushes).
    confirmations: usize,
    /// Each subscription of several channels: the index of its first reply
    /// and how many it expects. A server that refuses the command as a
    /// whole (`-NOAUTH`, `-NOPERM`) answers all of them with one error.
    groups: Vec<(usize, usize)>,
    /// The first command a shared command connection must refuse.
    bad_for_commands: Option<Refusal>,
    /// The first command a subscriber connection must refuse.
    bad_for_subscriber: Option<Refusal>,
    /// A `MULTI` not yet closed by `EXEC` or `DISCARD`.
    in_multi: bool,
    /// A `WATCH` not yet followed by a `MULTI` or an `UNWATCH`.
    watching: bool,
}

/// A command a connection must refuse: where its name is in the wire, and
/// why.
#[derive(Debug, Clone)]
struct Refusal {
    name: std::ops::Range<usize>,
    why: &'static str,
}

/// Decimal digits of `n`.
fn digits(n: usize) -> usize {
    itoa::Buffer::new().format(n).len()
}

const SUBSCRIPTIONS: [&str; 6] = [
    "SUBSCRIBE",
    "PSUBSCRIBE",
    "SSUBSCRIBE",
    "UNSUBSCRIBE",
    "PUNSUBSCRIBE",
    "SUNSUBSCRIBE",
];

impl Request {
    /// An empty pipeline.
    pub fn new() -> Request {
        Request::default()
    }

    /// A request of one command.
    pub fn command<I>(args: I) -> Request
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        let mut req = Request::new();
        req.add(args);
        req
    }

    /// Appends a command (its name, then its arguments; binary-safe).
    pub fn add<I>(&mut self, args: I) -> &mut Request
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        let args: Vec<I::Item> = args.into_iter().collect();
        if let Some(frozen) = self.frozen.take() {
            self.wire = BytesMut::from(&frozen[..]);
        }
        // One allocation for the command: `*N`, then `$len` and the bytes
        // of each argument, each line with its CRLF (a length has at most
        // 20 digits).
        let size = args.iter().fold(24, |n, a| n + a.as_ref().len() + 26);
        self.wire.reserve(size);
        let base = self.wire.len();
        encode_command(args.iter().map(AsRef::as_ref), &mut self.wire);
        self.len += 1;
        let name = args.first().map(AsRef::as_ref).unwrap_or_default();
        let second = args.get(1).map(AsRef::as_ref);
        let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
        if SUBSCRIPTIONS.iter().any(|n| is(n)) {
            let channels = args.len().saturating_sub(1).max(1);
            if channels > 1 {
                self.groups.push((self.replies, channels));
            }
            self.replies += channels;
            self.confirmations += channels;
        } else {
            self.replies += 1;
        }
        // Where the name sits in the wire, to name it in an error later:
        // after `*N\r\n$L\r\n`. Formatting it now would cost every
        // command an allocation (a subscriber refuses nearly all of them).
        let name_at = base + 6 + digits(args.len()) + digits(name.len());
        let refusal = |role| {
            refused(role, name, second, args.len()).map(|why| Refusal {
                name: name_at..name_at + name.len(),
                why,
            })
        };
        if self.bad_for_commands.is_none() {
            self.bad_for_commands = refusal(Role::Commands);
        }
        if self.bad_for_subscriber.is_none() {
            self.bad_for_subscriber = refusal(Role::Subscriber);
        }
        if is("MULTI") {
            self.in_multi = true;
            self.watching = false;
        } else if is("EXEC") || is("DISCARD") {
            self.in_multi = false;
        } else if is("WATCH") && !self.in_multi {
            self.watching = true;
        } else if is("UNWATCH") && !self.in_multi {
            self.watching = false;
        }
        self
    }

    /// A request that fails before it is sent, with `why`.
    pub(crate) fn invalid(why: String) -> Request {
        Request {
            invalid: Some(why),
            ..Request::default()
        }
    }

    /// How many commands it holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many replies it expects: one per command, one per channel of a
    /// (un)subscription.
    pub fn replies(&self) -> usize {
        self.replies
    }

    /// The encoded commands, as they go on the wire.
    pub fn wire(&self) -> &[u8] {
        match &self.frozen {
            Some(b) => b,
            None => &self.wire,
        }
    }

    /// The first command's name, as given (`GET`, `set`...), for the
    /// access log; read back from the encoding, `*N $len NAME ...`.
    fn first_name(&self) -> Option<&str> {
        let line = |b: &[u8]| -> Option<(usize, usize)> {
            let end = memchr::memchr(b'\n', b)?;
            Some((end.checked_sub(1)?, end + 1))
        };
        let wire = self.wire().strip_prefix(b"*")?;
        let (_, next) = line(wire)?;
        let rest = wire.get(next..)?.strip_prefix(b"$")?;
        let (len_end, name_at) = line(rest)?;
        let len: usize = std::str::from_utf8(rest.get(..len_end)?)
            .ok()?
            .parse()
            .ok()?;
        std::str::from_utf8(rest.get(name_at..name_at.checked_add(len)?)?).ok()
    }

    /// Checks the pipeline for `role`: no empty command, nothing that
    /// breaks reply counting, a `MULTI` closed by `EXEC` or `DISCARD`
    /// within it, a `WATCH` followed by its `MULTI` (or an `UNWATCH`).
    fn check(&self, role: Role) -> Result<(), String> {
        if let Some(why) = &self.invalid {
            return Err(why.clone());
        }
        if self.is_empty() {
            return Err("no command".into());
        }
        let bad = match role {
            Role::Commands => &self.bad_for_commands,
            Role::Subscriber => &self.bad_for_subscriber,
        };
        if let Some(bad) = bad {
            let name = self.wire().get(bad.name.clone()).unwrap_or_default();
            let name = String::from_utf8_lossy(name);
            return Err(format!("{name} refused: {}", bad.why));
        }
        if self.in_multi {
            return Err("MULTI must be sent with its EXEC or DISCARD in one pipeline".into());
        }
        if self.watching {
            return Err("WATCH must be sent with its MULTI ... EXEC in one pipeline".into());
        }
        Ok(())
    }
}

impl Message for Request {
    fn append(&mut self, _data: &[u8]) -> Result<Progress, ProtocolError> {
        Err(Redis::error(
            REFUSED_COMMAND,
            "a Redis client does not read requests",
        ))
    }

    fn encode(&mut self, out: &mut Vec<Bytes>) {
        let bytes = match &self.frozen {
            Some(b) => b.clone(),
            None => {
                let b = std::mem::take(&mut self.wire).freeze();
                self.frozen = Some(b.clone());
                b
            }
        };
        out.push(bytes);
    }

    fn sizes(&self) -> Option<MessageSizes> {
        Some(MessageSizes {
            head: 0,
            body: self.wire().len() as u64,
        })
    }

    /// The first command's name; a pipeline's record shows its first.
    fn request_line(&self) -> Option<(&str, &str)> {
        Some((self.first_name()?, ""))
    }
}

/// The replies to one [`Request`], one value per command, in order.
///
/// A reply that is an error (`-ERR ...`) is a [`Value::Error`] in its place:
/// one failed command does not fail the others.
#[derive(Debug)]
pub struct Reply {
    values: Vec<Value>,
    /// Values still to come.
    expected: usize,
    /// Subscription confirmations still to come.
    confirmations: usize,
    /// The request's subscriptions of several channels (see `Request`).
    groups: Vec<(usize, usize)>,
    /// Replies accounted for: values, and the confirmations an error
    /// stood in for.
    slot: usize,
    parser: Parser,
    /// The start of a value that has not arrived whole.
    kept: Vec<u8>,
    /// Pushes found between the values, for the engine to take.
    pushes: VecDeque<Value>,
    role: Role,
    /// A message nobody asked for: it is a push, or the stream is broken.
    unsolicited: bool,
    size: u64,
}

impl Reply {
    fn new(proto: &Redis, expected: usize, confirmations: usize, unsolicited: bool) -> Reply {
        Reply {
            values: Vec::with_capacity(expected.min(64)),
            expected,
            confirmations,
            groups: Vec::new(),
            slot: 0,
            parser: Parser::new(proto.limits),
            kept: Vec::new(),
            pushes: VecDeque::new(),
            role: proto.role,
            unsolicited,
            size: 0,
        }
    }

    /// The values, one per command.
    pub fn values(&self) -> &[Value] {
        &self.values
    }

    /// The values, taken out.
    pub fn into_values(self) -> Vec<Value> {
        self.values
    }

    /// Whether this message is a push (a pub/sub message, an invalidation)
    /// rather than replies.
    pub fn is_push(&self) -> bool {
        self.unsolicited
            && self
                .values
                .first()
                .is_some_and(|v| self.push_kind(v).is_some())
    }

    /// A push's kind (`message`, `pmessage`, `subscribe`...), for a value
    /// that is one on this connection: any RESP3 push, and on a RESP2
    /// subscriber connection an array led by a pub/sub kind.
    fn push_kind<'a>(&self, v: &'a Value) -> Option<&'a str> {
        match v {
            Value::Push(items) => Some(items.first().and_then(Value::as_str).unwrap_or("")),
            Value::Array(items) if self.role == Role::Subscriber => {
                let kind = items.first().and_then(Value::as_str)?;
                let pubsub = MESSAGE_KINDS.iter().any(|k| kind.eq_ignore_ascii_case(k))
                    || is_confirmation(kind);
                pubsub.then_some(kind)
            }
            _ => None,
        }
    }

    /// Files a whole top-level value: a reply in its place, or a push aside.
    fn accept(&mut self, v: Value) {
        let kind = self.push_kind(&v);
        let confirmation = kind.is_some_and(is_confirmation);
        match kind {
            Some(_) if confirmation && self.confirmations > 0 => {
                self.confirmations -= 1;
                self.slot += 1;
                self.values.push(v);
            }
            // A message or an invalidation between replies.
            Some(_) if !self.unsolicited => self.pushes.push_back(v),
            _ => {
                self.slot += 1;
                if v.is_error() {
                    self.refused_whole(self.slot - 1);
                }
                self.values.push(v);
            }
        }
    }

    /// An error took the place of reply `slot`: if a subscription of
    /// several channels starts there, the server refused it as a whole,
    /// and that one error is all of its replies.
    fn refused_whole(&mut self, slot: usize) {
        if let Some(&(_, n)) = self.groups.iter().find(|(start, _)| *start == slot) {
            self.expected = self.expected.saturating_sub(n - 1);
            self.confirmations = self.confirmations.saturating_sub(n);
            self.slot += n - 1;
        }
    }

    fn complete(&self) -> bool {
        self.values.len() >= self.expected
    }

    /// Parses `buf` from its start; how many bytes were used, and whether
    /// the reply is complete.
    fn parse_from(&mut self, buf: &[u8]) -> Result<(usize, bool), ProtocolError> {
        let mut off = 0;
        while !self.complete() {
            let rest = buf.get(off..).unwrap_or_default();
            let (value, used) = self
                .parser
                .feed(rest)
                .map_err(|e| Redis::error(MALFORMED_REPLY, e.to_string()))?;
            off += used;
            match value {
                Some(v) => self.accept(v),
                None => return Ok((off, false)),
            }
        }
        Ok((off, true))
    }
}

/// The kinds of pub/sub messages; with the (un)subscription confirmations
/// (named like their commands, [`SUBSCRIPTIONS`]) what a RESP2 subscriber
/// connection receives unasked.
const MESSAGE_KINDS: [&str; 3] = ["message", "pmessage", "smessage"];

/// Whether `kind` names a (un)subscription: a confirmation, the reply to
/// one of those commands.
fn is_confirmation(kind: &str) -> bool {
    SUBSCRIPTIONS.iter().any(|k| kind.eq_ignore_ascii_case(k))
}

impl Message for Reply {
    fn append(&mut self, data: &[u8]) -> Result<Progress, ProtocolError> {
        if self.kept.is_empty() {
            let (used, done) = self.parse_from(data)?;
            self.size += used as u64;
            if done {
                return Ok(Progress::Complete(used));
            }
            self.kept
                .extend_from_slice(data.get(used..).unwrap_or_default());
            return Ok(Progress::NeedMore(data.len()));
        }
        // A value began in an earlier read: parse it with what came now.
        let before = self.kept.len();
        self.kept.extend_from_slice(data);
        let mut kept = std::mem::take(&mut self.kept);
        let res = self.parse_from(&kept);
        let (used, done) = res?;
        self.size += used as u64;
        if done {
            // The kept bytes were only the start of a value, so the value
            // that completed the reply ended inside `data`.
            return Ok(Progress::Complete(used.saturating_sub(before).max(1)));
        }
        kept.drain(..used);
        self.kept = kept;
        Ok(Progress::NeedMore(data.len()))
    }

    fn encode(&mut self, out: &mut Vec<Bytes>) {
        let mut buf = Vec::new();
        for v in &self.values {
            super::encode_value(v, &mut buf);
        }
        out.push(buf.into());
    }

    fn sizes(&self) -> Option<MessageSizes> {
        Some(MessageSizes {
            head: 0,
            body: self.size,
        })
    }

    fn take_push(&mut self) -> Option<Reply> {
        let v = self.pushes.pop_front()?;
        Some(Reply {
            values: vec![v],
            expected: 1,
            confirmations: 0,
            groups: Vec::new(),
            slot: 1,
            parser: Parser::new(Limits::default()),
            kept: Vec::new(),
            pushes: VecDeque::new(),
            role: self.role,
            unsolicited: true,
            size: 0,
        })
    }
}

impl Protocol for Redis {
    type Request = Request;
    type Response = Reply;

    fn name(&self) -> &'static str {
        "redis"
    }

    fn new_request(&self) -> Request {
        Request::new()
    }

    fn new_response(&self, req: &Request) -> Reply {
        let mut reply = Reply::new(self, req.replies, req.confirmations, false);
        reply.groups.clone_from(&req.groups);
        reply
    }

    fn max_in_flight(&self) -> usize {
        self.max_in_flight
    }

    fn is_push(&self, msg: &Reply) -> bool {
        msg.is_push()
    }

    fn new_unsolicited(&self) -> Option<Reply> {
        Some(Reply::new(self, 1, 0, true))
    }

    fn connection_class(&self) -> u64 {
        self.class
    }

    fn check_request(&self, req: &Request) -> Result<(), ProtocolError> {
        req.check(self.role)
            .map_err(|why| Redis::error(REFUSED_COMMAND, why))
    }

    fn greeting(&self) -> Option<Request> {
        let url = &self.url;
        let mut req = Request::new();
        if url.resp3() {
            let mut hello = vec!["HELLO", "3"];
            if let Some(password) = url.password() {
                hello.extend(["AUTH", url.user().unwrap_or("default"), password]);
            }
            req.add(hello);
        } else if let Some(password) = url.password() {
            match url.user() {
                Some(user) => req.add(["AUTH", user, password]),
                None => req.add(["AUTH", password]),
            };
        }
        if url.db() != 0 && self.role == Role::Commands {
            req.add(["SELECT", itoa::Buffer::new().format(url.db())]);
        }
        (!req.is_empty()).then_some(req)
    }

    fn greeted(&self, reply: &Reply) -> Result<(), ProtocolError> {
        match reply.values().iter().find(|v| v.is_error()) {
            Some(err) => Err(Redis::error(
                GREETING_REFUSED,
                format!(
                    "the server refused the connection's greeting: {}",
                    error_text(err)
                ),
            )),
            None => Ok(()),
        }
    }
}

/// The text of an error reply.
pub(crate) fn error_text(v: &Value) -> String {
    match v.unannotated() {
        Value::Error(s) => s.clone(),
        Value::BulkError(b) => String::from_utf8_lossy(b).into_owned(),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proto() -> Redis {
        Redis::new(Url::new("127.0.0.1", 6379))
    }

    fn feed_all(reply: &mut Reply, wire: &[u8], step: usize) -> Option<usize> {
        let mut off = 0;
        while off < wire.len() {
            let end = (off + step).min(wire.len());
            match reply.append(&wire[off..end]).unwrap() {
                Progress::Complete(n) => return Some(off + n),
                Progress::NeedMore(n) => off += n,
            }
        }
        None
    }

    #[test]
    fn the_record_names_the_first_command() {
        let mut req = Request::new();
        assert_eq!(req.request_line(), None);
        req.add(["hset", "h", "f", "v"]).add(["GET", "k"]);
        assert_eq!(req.request_line(), Some(("hset", "")));
        req.encode(&mut Vec::new());
        assert_eq!(req.request_line(), Some(("hset", "")));
    }

    #[test]
    fn a_pipeline_reply_completes_after_its_count_at_any_split() {
        let mut req = Request::new();
        req.add(["SET", "k", "v"])
            .add(["GET", "k"])
            .add(["LRANGE", "l", "0", "-1"]);
        let wire = b"+OK\r\n$1\r\nv\r\n*2\r\n:1\r\n:2\r\n+NEXT\r\n";
        for step in 1..wire.len() {
            let mut reply = proto().new_response(&req);
            assert_eq!(
                feed_all(&mut reply, wire, step),
                Some(wire.len() - 7),
                "step {step}"
            );
            assert_eq!(reply.values().len(), 3);
            assert_eq!(reply.values()[1].as_str(), Some("v"));
        }
    }

    #[test]
    fn pushes_between_replies_are_set_aside() {
        let req = Request::command(["GET", "k"]);
        let mut reply = proto().new_response(&req);
        let wire = b">2\r\n+invalidate\r\n*1\r\n+k\r\n$1\r\nv\r\n";
        assert_eq!(feed_all(&mut reply, wire, 5), Some(wire.len()));
        assert_eq!(reply.values(), &[Value::BulkString("v".into())]);
        let push = reply.take_push().unwrap();
        assert!(push.is_push());
        assert!(reply.take_push().is_none());
    }

    #[test]
    fn resp3_subscription_confirmations_are_the_replies() {
        let sub = Redis::with_role(Url::new("h", 1), Role::Subscriber, 7);
        let req = Request::command(["SUBSCRIBE", "a", "b"]);
        let mut reply = sub.new_response(&req);
        let wire = b">3\r\n+message\r\n+x\r\n+p\r\n>3\r\n+subscribe\r\n+a\r\n:1\r\n>3\r\n+subscribe\r\n+b\r\n:2\r\n";
        assert_eq!(feed_all(&mut reply, wire, 64), Some(wire.len()));
        assert_eq!(reply.values().len(), 2);
        assert!(reply.take_push().is_some());
    }

    #[test]
    fn resp2_messages_are_pushes_only_on_a_subscriber_connection() {
        let wire = b"*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\np\r\n";
        let sub = Redis::with_role(Url::new("h", 1), Role::Subscriber, 7);
        let mut msg = sub.new_unsolicited().unwrap();
        assert_eq!(feed_all(&mut msg, wire, 3), Some(wire.len()));
        assert!(sub.is_push(&msg));
        // On a command connection the same array is an LRANGE's answer.
        let mut reply = proto().new_response(&Request::command(["LRANGE", "l", "0", "2"]));
        assert_eq!(feed_all(&mut reply, wire, 3), Some(wire.len()));
        assert_eq!(reply.values().len(), 1);
        assert!(!proto().is_push(&reply));
    }

    #[test]
    fn commands_that_break_shared_connections_are_refused() {
        let p = proto();
        for cmd in [
            vec!["SUBSCRIBE", "c"],
            vec!["select", "1"],
            vec!["MONITOR"],
            vec!["CLIENT", "reply", "off"],
            vec!["MULTI"],
            vec!["WATCH", "k"],
            vec!["QUIT"],
            vec!["PSYNC", "?", "-1"],
            vec!["CLIENT", "SETNAME", "x"],
            vec!["READONLY"],
        ] {
            let err = p.check_request(&Request::command(&cmd)).unwrap_err();
            assert_eq!(err.code, REFUSED_COMMAND, "{cmd:?}");
        }
        assert!(p.check_request(&Request::new()).is_err());
        let mut late = Request::command(["GET", "k"]);
        late.add(["select", "1"]);
        let err = p.check_request(&late).unwrap_err();
        assert!(err.reason.starts_with("select refused: "), "{}", err.reason);
        let sub = Redis::with_role(Url::new("h", 1), Role::Subscriber, 7);
        let err = sub
            .check_request(&Request::command(["GET", "k"]))
            .unwrap_err();
        assert!(err.reason.starts_with("GET refused: "), "{}", err.reason);
        let mut tx = Request::new();
        tx.add(["WATCH", "k"])
            .add(["MULTI"])
            .add(["INCR", "k"])
            .add(["EXEC"]);
        assert!(p.check_request(&tx).is_ok());
        assert!(p.check_request(&Request::command(["GET", "k"])).is_ok());
    }

    #[test]
    fn a_subscriber_connection_takes_subscriptions_ping_and_quit() {
        let sub = Redis::with_role(Url::new("h", 1), Role::Subscriber, 7);
        for ok in [vec!["SUBSCRIBE", "c"], vec!["PING"], vec!["QUIT"]] {
            assert!(sub.check_request(&Request::command(&ok)).is_ok(), "{ok:?}");
        }
        assert!(sub.check_request(&Request::command(["GET", "k"])).is_err());
    }

    /// A server that refuses a subscription as a whole (`-NOAUTH`,
    /// `-NOPERM`, `-ERR unknown command` for SSUBSCRIBE before Redis 7)
    /// answers it with ONE error, not one per channel: the reply must end
    /// there, and the next reply (here a PING's) is not its.
    #[test]
    fn a_subscription_refused_as_a_whole_is_one_error_reply() {
        let sub = Redis::with_role(Url::new("h", 1), Role::Subscriber, 7);
        let req = Request::command(["SUBSCRIBE", "a", "b"]);
        let refusal = b"-NOPERM this user has no permissions to access the 'a' channel\r\n";
        let mut wire = refusal.to_vec();
        wire.extend_from_slice(b"*2\r\n$4\r\npong\r\n$0\r\n\r\n");
        let mut reply = sub.new_response(&req);
        assert_eq!(feed_all(&mut reply, &wire, 64), Some(refusal.len()));
        assert!(reply.values()[0].is_error());
        assert_eq!(reply.values().len(), 1);
        // A subscription after the refused one still gets its own reply.
        let mut req = Request::command(["SUBSCRIBE", "a", "b"]);
        req.add(["PSUBSCRIBE", "p*"]);
        let mut wire = refusal.to_vec();
        wire.extend_from_slice(b">3\r\n+psubscribe\r\n+p*\r\n:1\r\n+PONG\r\n");
        let mut reply = sub.new_response(&req);
        assert_eq!(feed_all(&mut reply, &wire, 7), Some(wire.len() - 7));
        assert_eq!(reply.values().len(), 2);
    }

    /// `WATCH k`, `GET k`, `UNWATCH` leaves the connection as it found it
    /// (only a `MULTI` ended a `WATCH`: it was refused as unfinished).
    #[test]
    fn watch_then_unwatch_is_accepted() {
        let mut req = Request::new();
        req.add(["WATCH", "k"]).add(["GET", "k"]).add(["UNWATCH"]);
        assert!(proto().check_request(&req).is_ok());
    }

    #[test]
    fn the_greeting_follows_the_url() {
        assert!(proto().greeting().is_none());
        let url: Url = "redis://u:p@h/3?protocol=3".parse().unwrap();
        let g = Redis::new(url).greeting().unwrap();
        assert_eq!(
            g.wire(),
            &b"*5\r\n$5\r\nHELLO\r\n$1\r\n3\r\n$4\r\nAUTH\r\n$1\r\nu\r\n$1\r\np\r\n*2\r\n$6\r\nSELECT\r\n$1\r\n3\r\n"[..]
        );
        let url: Url = "redis://:p@h".parse().unwrap();
        assert_eq!(
            Redis::new(url).greeting().unwrap().wire(),
            b"*2\r\n$4\r\nAUTH\r\n$1\r\np\r\n"
        );
    }

    #[test]
    fn classes_differ_by_url_and_role() {
        let a = Redis::new("redis://h/1".parse().unwrap());
        let b = Redis::new("redis://h/2".parse().unwrap());
        assert_ne!(a.connection_class(), b.connection_class());
        let c = Redis::new("redis://h/1".parse().unwrap());
        assert_eq!(a.connection_class(), c.connection_class());
        let shallow = Redis::new("redis://h/1".parse().unwrap()).max_in_flight(1);
        assert_ne!(a.connection_class(), shallow.connection_class());
        let strict = Redis::new("redis://h/1".parse().unwrap()).limits(Limits {
            max_depth: 2,
            ..Limits::default()
        });
        assert_ne!(a.connection_class(), strict.connection_class());
    }
}
