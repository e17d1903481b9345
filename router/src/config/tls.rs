//! `tls = { ... }` tables: certificates and keys are read and checked while the config loads, so a
//! missing file, a file without PEM blocks, a key that does not match its certificate or an
//! unusable CA is a config error naming the key, never a failure at the first handshake.
//!
//! The rustls configurations are built here once per config (ring provider, TLS 1.2 and 1.3) and
//! shared by every executor through the snapshot.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use toml::Spanned;

use super::reader::{Diags, TableReader};

/// A listener's TLS: the server certificate chain and key (`tls = { cert = "...", key = "..." }`).
#[derive(Clone)]
pub struct ServerTls {
    /// Certificate chain file (PEM), as written in the config.
    pub cert: String,
    /// Private key file (PEM: PKCS#8, PKCS#1 or SEC1), as written in the config.
    pub key: String,
    /// The server configuration built from them.
    pub config: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// A backend group's TLS (`tls = { ca = "...", server_name = "..." }`): connections to its servers
/// are encrypted and the servers' certificates verified against `ca`.
#[derive(Clone)]
pub struct BackendTls {
    /// CA certificates file (PEM), as written in the config.
    pub ca: String,
    /// The name to verify in the servers' certificates; default: the host of each server's address
    /// (a DNS name or an IP address, which the certificate must then list as an IP SAN).
    pub server_name: Option<String>,
    /// The client configuration built from the CA.
    pub config: Arc<rustls::ClientConfig>,
}

impl BackendTls {
    /// The name to verify for a server at `address` (`host:port`).
    pub fn name_for(&self, address: &str) -> Option<rustls::pki_types::ServerName<'static>> {
        let host = match &self.server_name {
            Some(n) => n.as_str(),
            None => host_of(address),
        };
        rustls::pki_types::ServerName::try_from(host.to_string()).ok()
    }
}

impl std::fmt::Debug for BackendTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendTls")
            .field("ca", &self.ca)
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

/// The host part of `host:port` (brackets of an IPv6 address removed).
fn host_of(address: &str) -> &str {
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

// ring is the provider chosen for a lean tree; its deprecation only notes that it has no
// post-quantum key exchange.
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn resolve(base: &Path, p: &str) -> PathBuf {
    let path = Path::new(p);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

fn read_certs(
    d: &mut Diags,
    base: &Path,
    path: &str,
    v: &Spanned<String>,
) -> Option<Vec<CertificateDer<'static>>> {
    let file = resolve(base, v.get_ref());
    let bytes = match std::fs::read(&file) {
        Ok(b) => b,
        Err(e) => {
            d.error(
                v.span(),
                path,
                format!("cannot read `{}`: {e}", file.display()),
            );
            return None;
        }
    };
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&bytes).collect();
    match certs {
        Ok(c) if !c.is_empty() => Some(c),
        Ok(_) => {
            d.error(
                v.span(),
                path,
                format!(
                    "`{}` holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)",
                    file.display()
                ),
            );
            None
        }
        Err(e) => {
            d.error(
                v.span(),
                path,
                format!("`{}` is not valid PEM: {e}", file.display()),
            );
            None
        }
    }
}

fn read_key(
    d: &mut Diags,
    base: &Path,
    path: &str,
    v: &Spanned<String>,
) -> Option<PrivateKeyDer<'static>> {
    let file = resolve(base, v.get_ref());
    let bytes = match std::fs::read(&file) {
        Ok(b) => b,
        Err(e) => {
            d.error(
                v.span(),
                path,
                format!("cannot read `{}`: {e}", file.display()),
            );
            return None;
        }
    };
    match PrivateKeyDer::from_pem_slice(&bytes) {
        Ok(k) => Some(k),
        Err(e) => {
            d.error(
                v.span(),
                path,
                format!(
                    "`{}` holds no usable PEM private key (PKCS#8, PKCS#1 or SEC1): {e}",
                    file.display()
                ),
            );
            None
        }
    }
}

/// Reads a listener's `tls` table.
pub(crate) fn read_server_tls(
    mut t: TableReader<'_, '_>,
    d: &mut Diags,
    base: &Path,
) -> Option<ServerTls> {
    let path = t.path().to_string();
    let cert = t.req_str(d, "cert");
    let key = t.req_str(d, "key");
    t.finish(d);
    let (cert, key) = (cert?, key?);
    let chain = read_certs(d, base, &format!("{path}.cert"), &cert);
    let pkey = read_key(d, base, &format!("{path}.key"), &key);
    let (chain, pkey) = (chain?, pkey?);
    let built = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())
        .and_then(|b| {
            b.with_no_client_auth()
                .with_single_cert(chain, pkey)
                .map_err(|e| e.to_string())
        });
    match built {
        Ok(config) => Some(ServerTls {
            cert: cert.into_inner(),
            key: key.into_inner(),
            config: Arc::new(config),
        }),
        Err(e) => {
            d.error(
                key.span(),
                &format!("{path}.key"),
                format!("the key and certificate cannot serve TLS: {e}"),
            );
            None
        }
    }
}

/// Reads a backend group's `tls` table.
pub(crate) fn read_backend_tls(
    mut t: TableReader<'_, '_>,
    d: &mut Diags,
    base: &Path,
) -> Option<BackendTls> {
    let path = t.path().to_string();
    let ca = t.req_str(d, "ca");
    let server_name = t.opt_str(d, "server_name");
    t.finish(d);
    if let Some(n) = &server_name
        && rustls::pki_types::ServerName::try_from(n.get_ref().as_str()).is_err()
    {
        d.error(
            n.span(),
            &format!("{path}.server_name"),
            format!("`{}` is neither a DNS name nor an IP address", n.get_ref()),
        );
        return None;
    }
    let ca = ca?;
    let certs = read_certs(d, base, &format!("{path}.ca"), &ca)?;
    let mut roots = rustls::RootCertStore::empty();
    for c in certs {
        if let Err(e) = roots.add(c) {
            d.error(
                ca.span(),
                &format!("{path}.ca"),
                format!("unusable CA certificate: {e}"),
            );
            return None;
        }
    }
    let built = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map(|b| b.with_root_certificates(roots).with_no_client_auth());
    match built {
        Ok(config) => Some(BackendTls {
            ca: ca.into_inner(),
            server_name: server_name.map(Spanned::into_inner),
            config: Arc::new(config),
        }),
        Err(e) => {
            d.error(ca.span(), &format!("{path}.ca"), e.to_string());
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::host_of;

    #[test]
    fn host_of_addresses() {
        assert_eq!(host_of("127.0.0.1:3306"), "127.0.0.1");
        assert_eq!(host_of("db.example:3306"), "db.example");
        assert_eq!(host_of("[::1]:6379"), "::1");
    }
}
