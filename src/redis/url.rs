//! [`Url`]: where a Redis server is and how to greet it.

use crate::comm::Target;
use crate::error::Error;
use std::fmt;

/// A parsed `redis://[user][:password]@host[:port][/db][?protocol=3]` URL.
///
/// The port defaults to 6379 and the database to 0. A user name and a
/// password may be percent-encoded. `protocol=3` (or `resp3`) makes new
/// connections speak RESP3 (`HELLO 3`); the default is RESP2, which every
/// server speaks. A new connection sends what the URL asks for itself:
/// `HELLO 3` with the credentials, or `AUTH`, then `SELECT` when the
/// database is not 0.
///
/// ```
/// use taskweave::redis::Url;
///
/// let url: Url = "redis://app:s%40cret@db.local:6380/2?protocol=3".parse()?;
/// assert_eq!(url.host(), "db.local");
/// assert_eq!(url.port(), 6380);
/// assert_eq!(url.db(), 2);
/// assert_eq!(url.user(), Some("app"));
/// assert_eq!(url.password(), Some("s@cret"));
/// assert!(url.resp3());
/// // The password is never shown.
/// assert_eq!(url.to_string(), "redis://app:***@db.local:6380/2?protocol=3");
/// # Ok::<(), taskweave::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Url {
    host: String,
    port: u16,
    user: Option<String>,
    password: Option<String>,
    db: u32,
    resp3: bool,
}

impl Url {
    /// A URL for `host` and `port`: database 0, no credentials, RESP2.
    pub fn new(host: &str, port: u16) -> Url {
        Url {
            host: host.to_string(),
            port,
            user: None,
            password: None,
            db: 0,
            resp3: false,
        }
    }
    /// The host, a name or an address (IPv6 without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }
    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }
    /// The ACL user name, if any.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }
    /// The password, if any.
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }
    /// The database number.
    pub fn db(&self) -> u32 {
        self.db
    }
    /// Whether connections speak RESP3.
    pub fn resp3(&self) -> bool {
        self.resp3
    }
    /// The same URL with RESP3 on or off.
    pub fn with_resp3(mut self, on: bool) -> Url {
        self.resp3 = on;
        self
    }
    /// The same URL with database `db`.
    pub fn with_db(mut self, db: u32) -> Url {
        self.db = db;
        self
    }
    /// The same URL with these credentials (`user` `None` is the default
    /// user).
    pub fn with_auth(mut self, user: Option<&str>, password: &str) -> Url {
        self.user = user.map(str::to_string);
        self.password = Some(password.to_string());
        self
    }
    /// Where to connect.
    pub fn target(&self) -> Target {
        Target::new(&self.host, self.port)
    }
}

impl fmt::Debug for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Url({self})")
    }
}

impl fmt::Display for Url {
    /// The URL with the password masked, for logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("redis://")?;
        match (&self.user, &self.password) {
            (Some(u), Some(_)) => write!(f, "{u}:***@")?,
            (None, Some(_)) => f.write_str(":***@")?,
            _ => {}
        }
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)?;
        } else {
            write!(f, "{}:{}", self.host, self.port)?;
        }
        if self.db != 0 {
            write!(f, "/{}", self.db)?;
        }
        if self.resp3 {
            f.write_str("?protocol=3")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Url {
    type Err = Error;

    fn from_str(s: &str) -> Result<Url, Error> {
        let bad = |why: &str| Error::InvalidRequest(format!("bad Redis URL ({why})"));
        let rest = s
            .strip_prefix("redis://")
            .ok_or_else(|| bad("it must start with redis://"))?;
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        };
        let (authority, path) = match rest.split_once('/') {
            Some((a, p)) => (a, p),
            None => (rest, ""),
        };
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let mut url = Url::new("", 6379);
        if let Some(info) = userinfo {
            let (user, password) = match info.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (info, None),
            };
            let Some(password) = password else {
                return Err(bad("a user name needs a password: user:password@"));
            };
            url.password = Some(percent_decode(password).ok_or_else(|| bad("bad %-escape"))?);
            if !user.is_empty() {
                url.user = Some(percent_decode(user).ok_or_else(|| bad("bad %-escape"))?);
            }
        }
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(|| bad("unclosed ["))?;
            (host, after.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        url.host = host.to_string();
        if let Some(port) = port {
            url.port = port.parse().map_err(|_| bad("the port is not a number"))?;
        }
        if !path.is_empty() {
            url.db = path
                .parse()
                .map_err(|_| bad("the database is not a number"))?;
        }
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=').unwrap_or((pair, "")) {
                ("protocol", "3") | ("resp3", "" | "1" | "true") => url.resp3 = true,
                ("protocol", "2") | ("resp3", "0" | "false") => url.resp3 = false,
                (key, _) => return Err(bad(&format!("unknown parameter {key:?}"))),
            }
        }
        Ok(url)
    }
}

/// `%XX` escapes decoded; `None` for a broken escape or bytes that are not
/// UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hi = char::from(bytes.next()?).to_digit(16)?;
            let lo = char::from(bytes.next()?).to_digit(16)?;
            out.push(u8::try_from(hi * 16 + lo).ok()?);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        s.parse().unwrap()
    }

    #[test]
    fn defaults() {
        let u = url("redis://localhost");
        assert_eq!((u.host(), u.port(), u.db()), ("localhost", 6379, 0));
        assert_eq!((u.user(), u.password(), u.resp3()), (None, None, false));
        assert_eq!(url("redis://127.0.0.1:7000/").port(), 7000);
    }

    #[test]
    fn credentials_db_and_protocol() {
        let u = url("redis://:pw@h:1/15?protocol=3");
        assert_eq!(
            (u.user(), u.password(), u.db(), u.resp3()),
            (None, Some("pw"), 15, true)
        );
        let u = url("redis://u%3Ax:p%2F@[::1]:6379");
        assert_eq!(
            (u.user(), u.password(), u.host()),
            (Some("u:x"), Some("p/"), "::1")
        );
        assert_eq!(u.to_string(), "redis://u:x:***@[::1]:6379");
        assert!(url("redis://h?resp3").resp3());
    }

    #[test]
    fn bad_urls_are_errors() {
        for s in [
            "http://h",
            "redis://",
            "redis://h:x",
            "redis://h/db",
            "redis://u@h",
            "redis://:%zz@h",
            "redis://h?timeout=1",
            "redis://[::1",
        ] {
            assert!(s.parse::<Url>().is_err(), "{s}");
        }
    }
}
