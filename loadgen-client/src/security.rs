//! TLS and authentication of the connections to the servers: an `https://` endpoint is reached
//! over TLS (rustls with ring) and checked against `--tls-ca` or the system's roots, optionally
//! with a client certificate (mutual TLS) and another server name; a bearer token goes with every
//! RPC as `authorization: Bearer TOKEN` metadata. Plain `http://` endpoints take no TLS options.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};
use tonic::{Request, Status};

/// Why the TLS or authentication settings cannot be used.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum SecurityError {
    #[error("cannot read {option} {}: {reason}", path.display())]
    Unreadable {
        option: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("{option} {}: {problem}", path.display())]
    BadPem {
        option: &'static str,
        path: PathBuf,
        problem: String,
    },
    #[error(
        "no CA certificates to check the server's certificate with: the system has none (looked \
         where SSL_CERT_FILE / SSL_CERT_DIR and the usual /etc/ssl locations point); pass \
         --tls-ca FILE with the CA that signed it"
    )]
    NoSystemRoots,
    #[error("--token: a bearer token must be visible ASCII without spaces")]
    BadToken,
    #[error("--tls-key cannot sign the client certificate for https metrics scrapes: {0}")]
    UnusableKey(String),
}

/// The TLS settings of `https://` endpoints, with the files already read and checked.
#[derive(Clone, Default, PartialEq)]
pub struct TlsOptions {
    /// PEM CA bundle; `None`: the system's roots.
    pub ca_pem: Option<Vec<u8>>,
    /// PEM client certificate chain and private key (mutual TLS).
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    /// The name expected in the server's certificate (and sent as SNI) instead of the URL's host.
    pub server_name: Option<String>,
}

impl std::fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("TlsOptions")
            .field("ca", &self.ca_pem.as_ref().map(|_| "PEM"))
            .field("client_certificate", &self.identity.is_some())
            .field("server_name", &self.server_name)
            .finish()
    }
}

/// How connections to the servers are secured.
#[derive(Clone, Default, PartialEq)]
pub struct Security {
    /// TLS for `https://` endpoints (the defaults when `None`: system roots, no client
    /// certificate).
    pub tls: Option<TlsOptions>,
    /// Sent as `authorization: Bearer TOKEN` on every RPC.
    pub token: Option<String>,
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Security")
            .field("tls", &self.tls)
            .field("token", &self.token.as_ref().map(|_| "<hidden>"))
            .finish()
    }
}

fn read(option: &'static str, path: &Path) -> Result<Vec<u8>, SecurityError> {
    std::fs::read(path).map_err(|e| SecurityError::Unreadable {
        option,
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Counts the certificates and private keys in a PEM file.
fn pem_contents(
    option: &'static str,
    path: &Path,
    pem: &[u8],
) -> Result<(usize, usize), SecurityError> {
    let (mut certs, mut keys) = (0, 0);
    for item in ureq::tls::parse_pem(pem) {
        match item {
            Ok(ureq::tls::PemItem::Certificate(_)) => certs += 1,
            Ok(ureq::tls::PemItem::PrivateKey(_)) => keys += 1,
            Ok(_) => {}
            Err(e) => {
                return Err(SecurityError::BadPem {
                    option,
                    path: path.to_path_buf(),
                    problem: format!("not valid PEM ({e})"),
                })
            }
        }
    }
    Ok((certs, keys))
}

impl TlsOptions {
    /// Reads and checks the files named by `--tls-ca`, `--tls-cert` and `--tls-key`.
    pub fn load(
        ca: Option<&Path>,
        client_cert: Option<(&Path, &Path)>,
        server_name: Option<String>,
    ) -> Result<Self, SecurityError> {
        let bad = |option, path: &Path, problem: &str| SecurityError::BadPem {
            option,
            path: path.to_path_buf(),
            problem: problem.to_string(),
        };
        let ca_pem = match ca {
            Some(path) => {
                let pem = read("--tls-ca", path)?;
                if pem_contents("--tls-ca", path, &pem)?.0 == 0 {
                    return Err(bad("--tls-ca", path, "holds no PEM certificate"));
                }
                Some(pem)
            }
            None => None,
        };
        let identity = match client_cert {
            Some((cert, key)) => {
                let cert_pem = read("--tls-cert", cert)?;
                if pem_contents("--tls-cert", cert, &cert_pem)?.0 == 0 {
                    return Err(bad("--tls-cert", cert, "holds no PEM certificate"));
                }
                let key_pem = read("--tls-key", key)?;
                if pem_contents("--tls-key", key, &key_pem)?.1 == 0 {
                    return Err(bad("--tls-key", key, "holds no PEM private key"));
                }
                Some((cert_pem, key_pem))
            }
            None => None,
        };
        Ok(Self {
            ca_pem,
            identity,
            server_name,
        })
    }

    /// The tonic client configuration: `--tls-ca`'s certificates as the only roots, else the
    /// system's (an error when it has none).
    pub fn client_config(&self) -> Result<ClientTlsConfig, SecurityError> {
        let mut config = ClientTlsConfig::new();
        config = match &self.ca_pem {
            Some(pem) => config.ca_certificate(Certificate::from_pem(pem)),
            None => {
                system_roots()?;
                config.with_native_roots()
            }
        };
        if let Some((cert, key)) = &self.identity {
            config = config.identity(Identity::from_pem(cert, key));
        }
        if let Some(name) = &self.server_name {
            config = config.domain_name(name.clone());
        }
        Ok(config)
    }

    /// The same trust for `https://` metrics URLs (ureq): the CA bundle or the system's roots,
    /// and the client certificate. `--tls-server-name` is not applied: a metrics URL names the
    /// host its certificate must carry.
    pub fn ureq_config(&self) -> Result<ureq::tls::TlsConfig, SecurityError> {
        let roots: Vec<ureq::tls::Certificate<'static>> = match &self.ca_pem {
            Some(pem) => ureq::tls::parse_pem(pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect(),
            None => system_roots()?
                .iter()
                .map(|der| ureq::tls::Certificate::from_der(der).to_owned())
                .collect(),
        };
        let mut builder = ureq::tls::TlsConfig::builder()
            .provider(ureq::tls::TlsProvider::Rustls)
            .root_certs(ureq::tls::RootCerts::Specific(Arc::new(roots)));
        if let Some((cert, key)) = &self.identity {
            let chain: Vec<ureq::tls::Certificate<'static>> = ureq::tls::parse_pem(cert)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect();
            let key = ureq::tls::PrivateKey::from_pem(key)
                .map_err(|e| SecurityError::UnusableKey(e.to_string()))?;
            builder = builder.client_cert(Some(ureq::tls::ClientCert::new_with_certs(&chain, key)));
        }
        Ok(builder.build())
    }
}

/// The system's root certificates (DER), or an error when there are none.
fn system_roots() -> Result<Vec<Vec<u8>>, SecurityError> {
    let found = rustls_native_certs::load_native_certs();
    if found.certs.is_empty() {
        return Err(SecurityError::NoSystemRoots);
    }
    Ok(found.certs.iter().map(|c| c.as_ref().to_vec()).collect())
}

/// Adds `authorization: Bearer TOKEN` to every request (nothing without a token).
#[derive(Clone, Default)]
pub struct BearerToken(Option<MetadataValue<Ascii>>);

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = self.0.as_ref().map(|_| "<hidden>");
        f.debug_tuple("BearerToken").field(&shown).finish()
    }
}

impl BearerToken {
    /// The interceptor for `token`; an error when it cannot be sent as metadata.
    pub fn new(token: Option<&str>) -> Result<Self, SecurityError> {
        match token {
            None => Ok(Self(None)),
            Some(t) if t.is_empty() || t.chars().any(|c| !c.is_ascii_graphic()) => {
                Err(SecurityError::BadToken)
            }
            Some(t) => format!("Bearer {t}")
                .parse::<MetadataValue<Ascii>>()
                .map(|mut v| {
                    v.set_sensitive(true);
                    Self(Some(v))
                })
                .map_err(|_| SecurityError::BadToken),
        }
    }
}

impl Interceptor for BearerToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// Whether `endpoint` (a URL, or `host:port` meaning `http://`) is reached over TLS.
pub fn is_https(endpoint: &str) -> bool {
    endpoint
        .split_once("://")
        .is_some_and(|(scheme, _)| scheme.eq_ignore_ascii_case("https"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_goes_into_the_authorization_metadata() {
        let mut auth = BearerToken::new(Some("s3cr3t-token")).unwrap();
        let request = auth.call(Request::new(())).unwrap();
        assert_eq!(
            request.metadata().get("authorization").unwrap(),
            "Bearer s3cr3t-token"
        );
        assert!(!format!("{auth:?}").contains("s3cr3t"), "{auth:?}");
        let mut none = BearerToken::new(None).unwrap();
        assert!(none
            .call(Request::new(()))
            .unwrap()
            .metadata()
            .get("authorization")
            .is_none());
        for bad in ["", "two words", "new\nline", "é"] {
            assert_eq!(
                BearerToken::new(Some(bad)).unwrap_err(),
                SecurityError::BadToken
            );
        }
    }

    #[test]
    fn tls_files_are_checked_when_read() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no pem here\n").unwrap();
        let err = TlsOptions::load(Some(&empty), None, None).unwrap_err();
        assert!(
            err.to_string().contains("--tls-ca") && err.to_string().contains("no PEM certificate"),
            "{err}"
        );
        let missing = dir.path().join("missing.pem");
        let err = TlsOptions::load(Some(&missing), None, None).unwrap_err();
        assert!(
            matches!(
                err,
                SecurityError::Unreadable {
                    option: "--tls-ca",
                    ..
                }
            ),
            "{err}"
        );

        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let cert_path = dir.path().join("cert.pem");
        let key_path = dir.path().join("key.pem");
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        let err = TlsOptions::load(None, Some((&cert_path, &cert_path)), None).unwrap_err();
        assert!(
            err.to_string().contains("--tls-key") && err.to_string().contains("no PEM private key"),
            "{err}"
        );
        let ok = TlsOptions::load(
            Some(&cert_path),
            Some((&cert_path, &key_path)),
            Some("inference.test".into()),
        )
        .unwrap();
        assert!(ok.ca_pem.is_some() && ok.identity.is_some());
        assert!(!format!("{ok:?}").contains("PRIVATE"), "{ok:?}");
        assert!(ok.client_config().is_ok() && ok.ureq_config().is_ok());
    }

    #[test]
    fn https_is_told_by_the_scheme() {
        assert!(is_https("https://pi.local:8001"));
        assert!(is_https("HTTPS://pi.local:8001"));
        assert!(!is_https("http://pi.local:8001"));
        assert!(!is_https("pi.local:8001"));
    }
}
