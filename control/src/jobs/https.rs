//! The outbound HTTP(S) client of jobs, for HTTP items and the failure webhook (`alert`): [`call`] takes an
//! `http://` or `https://` URL. HTTPS is one request per connection over rustls (the `ring` provider, as
//! everywhere in Furrow), the server's certificate verified against a `ca_file` or the system's CA bundle.
//! No option turns verification off: a job that calls a self-signed server names its certificate as its CA.
//! The request is written and the response read by the same code as plain HTTP
//! (`crate::http::exchange_on`), only the stream differs.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

/// Where distributions keep their CA bundle (the first that exists is used).
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// The most response bytes read (HTTP and HTTPS; the rest is left unread).
const MAX_RESPONSE: u64 = 4 << 20;

// ring is the provider chosen for a lean tree (see router's TLS); its deprecation only notes that it has
// no post-quantum key exchange.
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The trust roots: the certificates of `ca_file`, else of the system bundle.
pub fn roots(ca_file: Option<&str>) -> Result<rustls::RootCertStore, String> {
    let path = match ca_file {
        Some(p) => p.to_string(),
        None => SYSTEM_BUNDLES
            .iter()
            .find(|p| std::path::Path::new(p).exists())
            .map(|p| p.to_string())
            .ok_or_else(|| {
                format!(
                    "no system CA bundle (looked for {}): give the job a ca_file",
                    SYSTEM_BUNDLES.join(", ")
                )
            })?,
    };
    let bytes = std::fs::read(&path).map_err(|e| format!("CA file {path}: {e}"))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("CA file {path} is not valid PEM: {e}"))?;
    let mut store = rustls::RootCertStore::empty();
    let (added, _ignored) = store.add_parsable_certificates(certs);
    if added == 0 {
        return Err(format!("CA file {path} holds no usable certificate"));
    }
    Ok(store)
}

/// A client configuration that verifies servers against `ca_file`, else the system bundle (also the
/// span collector's onward export, `trace::export`).
pub fn client_config(ca_file: Option<&str>) -> Result<rustls::ClientConfig, String> {
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots(ca_file)?)
        .with_no_client_auth())
}

/// Splits `HOST[:PORT]` into the address to connect to (port 443 by default) and the name to verify.
pub fn target(authority: &str) -> Result<(String, ServerName<'static>), String> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        // [v6]:port or [v6]
        let (h, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("bad host {authority:?}"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => p,
            None if after.is_empty() => "443",
            None => return Err(format!("bad host {authority:?}")),
        };
        (h, port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, p),
            None => (authority, "443"),
        }
    };
    let port: u16 = port
        .parse()
        .map_err(|_| format!("bad port in {authority:?}"))?;
    let name = ServerName::try_from(host.to_string())
        .map_err(|_| format!("{host:?} is not a DNS name or IP address"))?;
    let addr = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    Ok((addr, name))
}

/// The first 4 KiB of a response body, as text (what an item's result or a log line keeps).
fn body_text(r: &crate::http::HttpResponse) -> String {
    String::from_utf8_lossy(&r.body[..r.body.len().min(4096)]).into_owned()
}

/// One request to `url` (`http://HOST:PORT/PATH` or `https://HOST[:PORT]/PATH`; `ca_file` only for
/// `https://`), within `timeout`. Returns the status and the first 4 KiB of the body as text.
pub async fn call(
    url: &str,
    method: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    ca_file: Option<&str>,
    timeout: Duration,
) -> Result<(u16, String), String> {
    let (tls, rest) = match url.strip_prefix("https://") {
        Some(rest) => (true, rest),
        None => (
            false,
            url.strip_prefix("http://")
                .ok_or("only http:// and https:// URLs")?,
        ),
    };
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if tls {
        return request(host, method, path, headers, body, ca_file, timeout).await;
    }
    let exchange = async {
        let mut tcp = tokio::net::TcpStream::connect(host)
            .await
            .map_err(|e| format!("connect {host}: {e}"))?;
        tcp.set_nodelay(true).ok();
        let req = crate::http::Request {
            host,
            method,
            path,
            token: None,
            headers,
            body,
        };
        let r = crate::http::exchange_on(&mut tcp, &req, MAX_RESPONSE)
            .await
            .map_err(|e| e.to_string())?;
        Ok((r.status, body_text(&r)))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("timed out after {} ms", timeout.as_millis()))?
}

/// One HTTPS request: `authority` is `HOST[:PORT]`, `path` starts with `/`. Returns the status and the
/// first 4 KiB of the body as text.
#[allow(clippy::too_many_arguments)]
pub async fn request(
    authority: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    ca_file: Option<&str>,
    timeout: Duration,
) -> Result<(u16, String), String> {
    let (addr, name) = target(authority)?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config(ca_file)?));
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect(&addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        tcp.set_nodelay(true).ok();
        let mut tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS handshake with {authority}: {e}"))?;
        let req = crate::http::Request {
            host: authority,
            method,
            path,
            token: None,
            headers,
            body,
        };
        let r = crate::http::exchange_on(&mut tls, &req, MAX_RESPONSE)
            .await
            .map_err(|e| match e {
                crate::http::HttpError::Io(e) => format!("reading the response: {e}"),
                e => e.to_string(),
            })?;
        Ok((r.status, body_text(&r)))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("timed out after {} ms", timeout.as_millis()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_default_to_443_and_verify_the_host_name() {
        let (a, n) = target("example.com").unwrap();
        assert_eq!(a, "example.com:443");
        assert_eq!(
            format!("{n:?}"),
            format!("{:?}", ServerName::try_from("example.com").unwrap())
        );
        assert_eq!(target("127.0.0.1:8443").unwrap().0, "127.0.0.1:8443");
        assert_eq!(target("[::1]:8443").unwrap().0, "[::1]:8443");
        assert_eq!(target("[::1]").unwrap().0, "[::1]:443");
        assert!(target("host:notaport").unwrap_err().contains("bad port"));
        assert!(target("[::1").is_err());
    }

    #[test]
    fn ca_files_must_hold_certificates() {
        let d = tempfile::tempdir().unwrap();
        let empty = d.path().join("empty.pem");
        std::fs::write(&empty, "no pem here\n").unwrap();
        let e = roots(Some(empty.to_str().unwrap())).unwrap_err();
        assert!(e.contains("no usable certificate"), "{e}");
        let e = roots(Some("/nonexistent/ca.pem")).unwrap_err();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
    }
}
