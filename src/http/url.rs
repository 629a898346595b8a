//! The `http://` and `https://` URLs a client task accepts.

use crate::error::Error;

/// A parsed `http[s]://host[:port][/path][?query]` URL (fragments are
/// dropped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    https: bool,
    host: String,
    port: u16,
    target: String,
}

impl Url {
    /// Parses `url`: `http` or `https` (TLS; with the `tls` feature, else
    /// the request fails when it starts). Userinfo is rejected rather than
    /// silently sent nowhere.
    pub fn parse(url: &str) -> Result<Url, Error> {
        let bad = |why: &str| Error::InvalidRequest(format!("{why}: {url:?}"));
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| bad("not an absolute URL"))?;
        let https = if scheme.eq_ignore_ascii_case("https") {
            true
        } else if scheme.eq_ignore_ascii_case("http") {
            false
        } else {
            return Err(bad("only http:// and https:// URLs are supported"));
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        if authority.contains('@') {
            return Err(bad("userinfo in URLs is not supported"));
        }
        let default_port = if https { 443 } else { 80 };
        let (host, port) =
            split_host_port(authority, default_port).ok_or_else(|| bad("bad host or port"))?;
        if host.is_empty()
            || host
                .bytes()
                .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err(bad("bad host"));
        }
        let tail = tail.split('#').next().unwrap_or("");
        let target = match tail.chars().next() {
            None => "/".to_string(),
            Some('?') => format!("/{tail}"),
            _ => tail.to_string(),
        };
        if target
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err(bad("spaces or control characters in the path"));
        }
        Ok(Url {
            https,
            host: host.to_ascii_lowercase(),
            port,
            target,
        })
    }

    /// The host name or address (IPv6 without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }
    /// The port (80, or 443 for `https`, when absent).
    pub fn port(&self) -> u16 {
        self.port
    }
    /// Whether the scheme is `https`.
    pub fn is_https(&self) -> bool {
        self.https
    }
    /// `http` or `https`.
    pub fn scheme(&self) -> &'static str {
        if self.https {
            "https"
        } else {
            "http"
        }
    }
    /// The request target: path and query.
    pub fn target(&self) -> &str {
        &self.target
    }
    /// The `Host` header value.
    pub fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == if self.https { 443 } else { 80 } {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    /// Resolves a `Location` value against this URL.
    pub fn join(&self, location: &str) -> Result<Url, Error> {
        if location.contains("://") {
            return Url::parse(location);
        }
        if let Some(rest) = location.strip_prefix("//") {
            return Url::parse(&format!("{}://{rest}", self.scheme()));
        }
        let target = if location.starts_with('/') {
            location.to_string()
        } else {
            let path = self.target.split('?').next().unwrap_or("/");
            let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
            format!("{dir}{location}")
        };
        Url::parse(&format!(
            "{}://{}{}",
            self.scheme(),
            self.authority(),
            target
        ))
    }
}

fn split_host_port(authority: &str, default_port: u16) -> Option<(&str, u16)> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after.strip_prefix(':') {
            Some(p) => Some((host, p.parse().ok()?)),
            None if after.is_empty() => Some((host, default_port)),
            None => None,
        };
    }
    match authority.rsplit_once(':') {
        Some((host, p)) => Some((host, p.parse().ok()?)),
        None => Some((authority, default_port)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_joins() {
        let u = Url::parse("http://Example.com:8080/a/b?x=1#frag").unwrap();
        assert_eq!(
            (u.host(), u.port(), u.target()),
            ("example.com", 8080, "/a/b?x=1")
        );
        assert_eq!(u.authority(), "example.com:8080");
        let v = Url::parse("http://[::1]/").unwrap();
        assert_eq!(
            (v.host(), v.port(), v.authority().as_str()),
            ("::1", 80, "[::1]")
        );
        assert_eq!(Url::parse("http://h?q").unwrap().target(), "/?q");
        assert_eq!(u.join("c").unwrap().target(), "/a/c");
        assert_eq!(u.join("/z").unwrap().target(), "/z");
        assert_eq!(u.join("http://other/").unwrap().host(), "other");
        let s = Url::parse("HTTPS://Example.com/x").unwrap();
        assert!(s.is_https());
        assert_eq!((s.port(), s.authority().as_str()), (443, "example.com"));
        assert_eq!(s.join("//other/y").unwrap().scheme(), "https");
        assert_eq!(s.join("/z").unwrap().scheme(), "https");
        assert_eq!(Url::parse("https://h:8443/").unwrap().authority(), "h:8443");
        for bad in [
            "ftp://x/",
            "x/y",
            "http://:80/",
            "http://h:99999/",
            "http://u@h/",
            "http://h/a b",
        ] {
            assert!(Url::parse(bad).is_err(), "{bad}");
        }
    }
}
