//! Who may talk to the server: TLS (rustls) on every listener, with the certificate reloaded on
//! SIGHUP, optional client certificates (mTLS) and optional bearer tokens. Health checks stay
//! open (probes carry no credentials); everything else — inference, metadata, model control,
//! `/metrics` — needs a client certificate the CA signed once `--tls-client-ca` is given, and a
//! token once a token file is given.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use http::{HeaderMap, HeaderValue};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;

/// Why the TLS or token settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("{what} {path}: {reason}")]
    File {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("TLS: {0}")]
    Tls(String),
}

fn file_error<'a>(what: &'static str, path: &'a Path) -> impl Fn(String) -> AccessError + 'a {
    move |reason| AccessError::File {
        what,
        path: path.to_path_buf(),
        reason,
    }
}

/// Where the TLS and token files are.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AccessSettings {
    /// The server's certificate chain (PEM) and its private key (PEM).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// CA certificates (PEM) client certificates must chain to; none: no client certificates.
    pub client_ca: Option<PathBuf>,
    /// Bearer tokens, one per line (`#` comments).
    pub token_file: Option<PathBuf>,
}

/// The certificate the server presents, replaceable while it runs.
#[derive(Debug)]
struct Certificate {
    files: (PathBuf, PathBuf),
    current: RwLock<Arc<CertifiedKey>>,
}

impl Certificate {
    fn load(files: &(PathBuf, PathBuf)) -> Result<Arc<CertifiedKey>, AccessError> {
        let (cert_path, key_path) = files;
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
            .map_err(|e| file_error("certificate", cert_path)(e.to_string()))?
            .collect::<Result<_, _>>()
            .map_err(|e| file_error("certificate", cert_path)(e.to_string()))?;
        if chain.is_empty() {
            return Err(file_error("certificate", cert_path)(
                "no PEM certificate in it".into(),
            ));
        }
        let key = PrivateKeyDer::from_pem_file(key_path)
            .map_err(|e| file_error("private key", key_path)(e.to_string()))?;
        let signing = rustls::crypto::ring::sign::any_supported_type(&key)
            .map_err(|e| file_error("private key", key_path)(e.to_string()))?;
        let certified = CertifiedKey::new(chain, signing);
        certified.keys_match().map_err(|e| {
            file_error("private key", key_path)(format!("does not match the certificate: {e}"))
        })?;
        Ok(Arc::new(certified))
    }
}

impl ResolvesServerCert for Certificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.current.read().unwrap_or_else(|e| e.into_inner()),
        ))
    }
}

/// Bearer tokens, replaceable while the server runs.
#[derive(Debug)]
struct Tokens {
    path: PathBuf,
    current: RwLock<Vec<Vec<u8>>>,
}

impl Tokens {
    fn load(path: &Path) -> Result<Vec<Vec<u8>>, AccessError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| file_error("token file", path)(e.to_string()))?;
        let tokens: Vec<Vec<u8>> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| l.as_bytes().to_vec())
            .collect();
        if tokens.is_empty() {
            return Err(file_error("token file", path)(
                "holds no token (one per line)".into(),
            ));
        }
        if let Some(short) = tokens.iter().find(|t| t.len() < 16) {
            return Err(file_error("token file", path)(format!(
                "a token of {} characters is too easy to guess: use at least 16",
                short.len()
            )));
        }
        Ok(tokens)
    }
}

/// Compares `presented` with `token` in time that depends only on `presented`'s length, so
/// timing tells neither how much of a guess was right nor how long the token is.
fn same(token: &[u8], presented: &[u8]) -> bool {
    let mut difference = u8::from(token.len() != presented.len() || token.is_empty());
    for (i, byte) in presented.iter().enumerate() {
        let expected = token.get(i).copied().unwrap_or(0);
        difference |= expected ^ byte;
    }
    difference == 0
}

/// Why a request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No `authorization: Bearer …` header.
    Missing,
    /// A token that is not one of the server's.
    Wrong,
    /// No client certificate, where the server asks for one.
    NoClientCertificate,
}

impl Denied {
    /// The message sent back.
    pub fn message(self) -> &'static str {
        match self {
            Denied::Missing => "this server needs a bearer token: send `authorization: Bearer <token>`",
            Denied::Wrong => "the bearer token is not valid",
            Denied::NoClientCertificate => {
                "this server needs a client certificate signed by its client CA (only health checks go without)"
            }
        }
    }
}

/// The server's TLS and tokens.
pub struct Access {
    certificate: Option<Arc<Certificate>>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    client_certificates: bool,
    tokens: Option<Tokens>,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("tls", &self.tls.is_some())
            .field("certificate", &self.certificate.is_some())
            .field("client_certificates", &self.client_certificates)
            .field("tokens", &self.tokens.is_some())
            .finish()
    }
}

/// Paths anyone may call: the health checks.
fn is_open(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.Health/")
        || path == "/v2/health/live"
        || path == "/v2/health/ready"
}

impl Access {
    /// No TLS, no tokens.
    pub fn open() -> Arc<Self> {
        Arc::new(Access {
            certificate: None,
            tls: None,
            client_certificates: false,
            tokens: None,
        })
    }

    /// Loads the files `settings` names.
    pub fn load(settings: &AccessSettings) -> Result<Arc<Self>, AccessError> {
        let certificate = match &settings.tls {
            Some(files) => Some(Arc::new(Certificate {
                current: RwLock::new(Certificate::load(files)?),
                files: files.clone(),
            })),
            None => None,
        };
        if settings.client_ca.is_some() && certificate.is_none() {
            return Err(AccessError::Tls(
                "client certificates (--tls-client-ca) need the server's own (--tls-cert, --tls-key)".into(),
            ));
        }
        let tls = match &certificate {
            Some(certificate) => Some(acceptor(certificate, settings.client_ca.as_deref())?),
            None => None,
        };
        let tokens = match &settings.token_file {
            Some(path) => Some(Tokens {
                current: RwLock::new(Tokens::load(path)?),
                path: path.clone(),
            }),
            None => None,
        };
        Ok(Arc::new(Access {
            certificate,
            tls,
            client_certificates: settings.client_ca.is_some(),
            tokens,
        }))
    }

    /// Re-reads the certificate and the tokens, all or nothing: on an error in either the old
    /// certificate and tokens stay in use. (The client CA is read at start-up only.)
    pub fn reload(&self) -> Result<(), AccessError> {
        let certificate = match &self.certificate {
            Some(certificate) => Some((certificate, Certificate::load(&certificate.files)?)),
            None => None,
        };
        let tokens = match &self.tokens {
            Some(tokens) => Some((tokens, Tokens::load(&tokens.path)?)),
            None => None,
        };
        if let Some((certificate, fresh)) = certificate {
            *certificate
                .current
                .write()
                .unwrap_or_else(|e| e.into_inner()) = fresh;
        }
        if let Some((tokens, fresh)) = tokens {
            *tokens.current.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        }
        Ok(())
    }

    /// The TLS acceptor, when the listeners speak TLS.
    pub fn tls(&self) -> Option<&tokio_rustls::TlsAcceptor> {
        self.tls.as_ref()
    }

    /// Whether bearer tokens are required.
    pub fn needs_token(&self) -> bool {
        self.tokens.is_some()
    }

    /// Whether requests other than health checks need a token or a client certificate.
    pub fn needs_credentials(&self) -> bool {
        self.needs_token() || self.client_certificates
    }

    /// Whether a request for `path` with `headers`, on a connection whose client did or did not
    /// present a certificate the client CA signed, may go on.
    pub fn check(
        &self,
        path: &str,
        headers: &HeaderMap<HeaderValue>,
        client_certified: bool,
    ) -> Result<(), Denied> {
        if is_open(path) {
            return Ok(());
        }
        if self.client_certificates && !client_certified {
            return Err(Denied::NoClientCertificate);
        }
        let Some(tokens) = &self.tokens else {
            return Ok(());
        };
        let given = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .ok_or(Denied::Missing)?
            .trim()
            .as_bytes();
        let known = tokens.current.read().unwrap_or_else(|e| e.into_inner());
        // Every token is compared, whichever matches.
        let matched = known.iter().fold(false, |m, t| m | same(t, given));
        if matched {
            Ok(())
        } else {
            Err(Denied::Wrong)
        }
    }
}

/// The rustls acceptor: TLS 1.2 and 1.3, HTTP/2 and HTTP/1.1 by ALPN. With `client_ca`, a
/// client certificate is checked against it when one is sent (one from another CA fails the
/// handshake); whether one is needed is decided per request, so health probes need none.
fn acceptor(
    certificate: &Arc<Certificate>,
    client_ca: Option<&Path>,
) -> Result<tokio_rustls::TlsAcceptor, AccessError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| AccessError::Tls(e.to_string()))?;
    let builder = match client_ca {
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .map_err(|e| file_error("client CA", path)(e.to_string()))?
                .collect::<Result<_, _>>()
                .map_err(|e| file_error("client CA", path)(e.to_string()))?;
            for certificate in certificates {
                roots
                    .add(certificate)
                    .map_err(|e| file_error("client CA", path)(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(file_error("client CA", path)(
                    "no PEM certificate in it".into(),
                ));
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| AccessError::Tls(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config =
        builder.with_cert_resolver(Arc::clone(certificate) as Arc<dyn ResolvesServerCert>);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Trusts exactly the certificate this server serves now: how the server reaches its own TLS
/// listener (the systemd watchdog) without a CA bundle of its own.
#[derive(Debug)]
struct ServedCertificate {
    certificate: Arc<Certificate>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for ServedCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let served = Arc::clone(
            &self
                .certificate
                .current
                .read()
                .unwrap_or_else(|e| e.into_inner()),
        );
        if served
            .end_entity_cert()
            .is_ok_and(|own| own.as_ref() == end_entity.as_ref())
        {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

impl Access {
    /// A TLS client for this server's own listeners, trusting the certificate it serves (and no
    /// other), when they speak TLS.
    pub fn own_connector(&self) -> Option<tokio_rustls::TlsConnector> {
        let certificate = self.certificate.as_ref()?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = Arc::new(ServedCertificate {
            certificate: Arc::clone(certificate),
            provider: Arc::clone(&provider),
        });
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .ok()?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec()];
        Some(tokio_rustls::TlsConnector::from(Arc::new(config)))
    }
}

/// Whether every address is on the loopback interface (no other machine can reach it).
pub fn all_loopback(addresses: &[std::net::SocketAddr]) -> bool {
    addresses.iter().all(|a| a.ip().is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_needs_every_byte_and_the_length() {
        let token = b"abcdefghijklmnop0123";
        assert!(same(token, token));
        assert!(!same(token, b"abcdefghijklmnop012"));
        assert!(!same(token, b"abcdefghijklmnop01234"));
        assert!(!same(token, b"abcdefghijklmnop0124"));
        assert!(!same(token, b""));
        assert!(!same(b"", b""));
    }

    #[test]
    fn tokens_are_compared_whole_and_health_stays_open() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tokens");
        std::fs::write(
            &file,
            "# operators\nabcdefghijklmnop0123\n\nsecond-token-0123456789\n",
        )
        .unwrap();
        let access = Access::load(&AccessSettings {
            token_file: Some(file.clone()),
            ..AccessSettings::default()
        })
        .unwrap();
        let headers = |value: &str| {
            let mut h = HeaderMap::new();
            h.insert(
                http::header::AUTHORIZATION,
                HeaderValue::from_str(value).unwrap(),
            );
            h
        };
        let path = "/inference.GRPCInferenceService/ModelInfer";
        assert_eq!(
            access.check(path, &HeaderMap::new(), false),
            Err(Denied::Missing)
        );
        assert_eq!(
            access.check(path, &headers("Bearer abcdefghijklmnop0123"), false),
            Ok(())
        );
        assert_eq!(
            access.check(path, &headers("Bearer second-token-0123456789"), false),
            Ok(())
        );
        assert_eq!(
            access.check(path, &headers("Bearer abcdefghijklmnop012"), false),
            Err(Denied::Wrong)
        );
        assert_eq!(
            access.check(path, &headers("Basic abcdefghijklmnop0123"), false),
            Err(Denied::Missing)
        );
        assert_eq!(
            access.check("/grpc.health.v1.Health/Check", &HeaderMap::new(), false),
            Ok(())
        );
        assert_eq!(
            access.check("/v2/health/ready", &HeaderMap::new(), false),
            Ok(())
        );
        assert_eq!(
            access.check("/metrics", &HeaderMap::new(), false),
            Err(Denied::Missing)
        );

        std::fs::write(&file, "rotated-token-0123456789\n").unwrap();
        access.reload().unwrap();
        assert_eq!(
            access.check(path, &headers("Bearer abcdefghijklmnop0123"), false),
            Err(Denied::Wrong)
        );
        assert_eq!(
            access.check(path, &headers("Bearer rotated-token-0123456789"), false),
            Ok(())
        );
        std::fs::write(&file, "short\n").unwrap();
        assert!(access
            .reload()
            .unwrap_err()
            .to_string()
            .contains("too easy to guess"));
        assert_eq!(
            access.check(path, &headers("Bearer rotated-token-0123456789"), false),
            Ok(()),
            "the old tokens stay"
        );
    }

    #[test]
    fn bad_tls_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        std::fs::write(&cert, "not a certificate").unwrap();
        let err = Access::load(&AccessSettings {
            tls: Some((cert.clone(), dir.path().join("missing.pem"))),
            ..AccessSettings::default()
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("cert.pem"), "{err}");
        let err = Access::load(&AccessSettings {
            client_ca: Some(cert),
            ..AccessSettings::default()
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("need the server's own"), "{err}");
    }
}
