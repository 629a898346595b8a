//! Building rustls' server and client configurations from what users give:
//! PEM files, a custom CA. Kept apart from the session plumbing (`tls.rs`),
//! and the one place that knows whether the `tls` feature is on: without
//! it, the types below are empty and the engines' TLS branches never run.

use std::path::PathBuf;

/// A certificate chain and its private key, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PemPair {
    pub cert_chain: PathBuf,
    pub key: PathBuf,
}

/// What a finished handshake agreed on, for the access log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Agreed {
    /// `TLSv1.3` or `TLSv1.2`.
    pub version: &'static str,
    /// The IANA name of the cipher suite (`TLS13_AES_128_GCM_SHA256`).
    pub cipher: &'static str,
    /// The session was resumed (no full handshake).
    pub resumed: bool,
}

/// Whether a read's `err` came from a TLS session (the connection closes
/// with `tls_error`) rather than from the socket: the session reports its
/// failures as `InvalidData`, which a socket never does.
pub(crate) fn is_tls_error(err: &std::io::Error) -> bool {
    err.kind() == std::io::ErrorKind::InvalidData
}

#[cfg(feature = "tls")]
pub(crate) use on::*;

#[cfg(not(feature = "tls"))]
pub(crate) use off::*;

#[cfg(feature = "tls")]
mod on {
    use super::PemPair;
    use rustls::crypto::CryptoProvider;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use rustls::server::{ClientHello, ResolvesServerCert};
    use rustls::sign::CertifiedKey;
    use std::io;
    use std::path::Path;
    use std::sync::Arc;

    /// A server's TLS settings, shared by its connections.
    pub(crate) type ServerTls = Arc<rustls::ServerConfig>;

    /// A client config's TLS settings, shared by its connections: sessions
    /// resume across them through rustls' session cache, which lives here.
    pub(crate) type ClientTls = Arc<rustls::ClientConfig>;

    fn provider() -> Arc<CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    fn invalid(path: &Path, what: &str, err: impl std::fmt::Display) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: {what}: {err}", path.display()),
        )
    }

    fn read_chain(path: &Path) -> io::Result<Vec<CertificateDer<'static>>> {
        let chain = CertificateDer::pem_file_iter(path)
            .map_err(|e| invalid(path, "cannot read certificates", e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(path, "bad PEM certificate", e))?;
        if chain.is_empty() {
            return Err(invalid(path, "no certificate", "no CERTIFICATE block"));
        }
        Ok(chain)
    }

    /// One identity: the chain and key of `pair`, checked to match.
    fn load(pair: &PemPair, provider: &CryptoProvider) -> io::Result<CertifiedKey> {
        let chain = read_chain(&pair.cert_chain)?;
        let key = PrivateKeyDer::from_pem_file(&pair.key)
            .map_err(|e| invalid(&pair.key, "cannot read a private key", e))?;
        CertifiedKey::from_der(chain, key, provider)
            .map_err(|e| invalid(&pair.key, "key does not fit the certificate", e))
    }

    /// Picks the certificate by the name the client asks for (SNI): the
    /// first whose names cover it. A client that names none gets the first
    /// certificate; one that names a host we have no certificate for gets
    /// none, and its handshake fails (`tls_error`), rather than a
    /// certificate for another name.
    #[derive(Debug)]
    struct BySni(Vec<Arc<CertifiedKey>>);

    impl BySni {
        fn covers(key: &CertifiedKey, name: &ServerName<'_>) -> bool {
            let Some(leaf) = key.cert.first() else {
                return false;
            };
            webpki::EndEntityCert::try_from(leaf)
                .and_then(|cert| cert.verify_is_valid_for_subject_name(name))
                .is_ok()
        }
    }

    impl ResolvesServerCert for BySni {
        fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
            let Some(sni) = hello.server_name() else {
                return self.0.first().cloned();
            };
            let name = ServerName::try_from(sni).ok()?;
            self.0.iter().find(|k| Self::covers(k, &name)).cloned()
        }
    }

    /// A server's TLS settings from `pairs` (the first is the default, the
    /// others are chosen by SNI), offering `alpn`; `None` without pairs.
    pub(crate) fn server_tls(pairs: &[PemPair], alpn: &[&[u8]]) -> io::Result<Option<ServerTls>> {
        if pairs.is_empty() {
            return Ok(None);
        }
        let provider = provider();
        let keys = pairs
            .iter()
            .map(|p| load(p, &provider).map(Arc::new))
            .collect::<io::Result<Vec<_>>>()?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| io::Error::other(format!("TLS: {e}")))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(BySni(keys)));
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        // Stateless tickets (TLS 1.3 and 1.2): resumption without a
        // per-session cache on the server.
        config.ticketer = rustls::crypto::ring::Ticketer::new()
            .map_err(|e| io::Error::other(format!("TLS: {e}")))?;
        Ok(Some(Arc::new(config)))
    }

    /// A client's TLS settings: the Mozilla roots (webpki-roots), plus the
    /// CA certificates in `extra_roots` (PEM files), offering `alpn`.
    pub(crate) fn client_tls(
        extra_roots: &[std::path::PathBuf],
        alpn: &[&[u8]],
    ) -> io::Result<ClientTls> {
        let mut roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        for path in extra_roots {
            for cert in read_chain(path)? {
                roots
                    .add(cert)
                    .map_err(|e| invalid(path, "not a CA certificate", e))?;
            }
        }
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| io::Error::other(format!("TLS: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }
}

#[cfg(not(feature = "tls"))]
mod off {
    use super::PemPair;
    use std::io;

    /// Without the `tls` feature there are no TLS settings.
    pub(crate) type ServerTls = std::convert::Infallible;

    /// Without the `tls` feature there are no TLS settings.
    pub(crate) type ClientTls = std::convert::Infallible;

    /// Without the `tls` feature a client has no TLS settings to build.
    pub(crate) fn client_tls(
        _extra_roots: &[std::path::PathBuf],
        _alpn: &[&[u8]],
    ) -> io::Result<ClientTls> {
        Err(unsupported())
    }

    fn unsupported() -> io::Error {
        io::Error::new(
            io::ErrorKind::Unsupported,
            "TLS: taskweave was built without its `tls` feature",
        )
    }

    /// Without the `tls` feature a server given certificates refuses to start.
    pub(crate) fn server_tls(pairs: &[PemPair], _alpn: &[&[u8]]) -> io::Result<Option<ServerTls>> {
        if pairs.is_empty() {
            return Ok(None);
        }
        Err(unsupported())
    }
}
