//! A throwaway certificate authority and server certificates for TLS tests, made once per test
//! process with the `openssl` CLI (Debian: `apt-get install -y openssl`, present by default) in
//! an instance directory of the kit (swept like the servers' when the process is gone).
//!
//! The server certificate is valid for `localhost`, `127.0.0.1` and `::1` (and usable as a client
//! certificate too, as a Redis Cluster bus over TLS needs), so clients that verify
//! the host name (`mariadb --ssl-verify-server-cert`, PyMySQL with `check_hostname`,
//! mysql-connector with `ssl_verify_identity`, `redis-cli --tls`) accept it when given
//! [`TestCerts::ca`]. A second, unrelated CA ([`TestCerts::other_ca`]) makes "wrong CA" tests.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::error::{Error, Result};

/// PEM files of the test CA and a server certificate signed by it.
#[derive(Debug)]
pub struct TestCerts {
    /// The CA certificate (give it to clients as their trust root).
    pub ca: PathBuf,
    /// The server certificate (SANs: localhost, 127.0.0.1, ::1), signed by [`Self::ca`].
    pub cert: PathBuf,
    /// The server certificate's private key (PKCS#8).
    pub key: PathBuf,
    /// A CA that signed nothing here: verification against it fails.
    pub other_ca: PathBuf,
    /// The directory holding them all.
    pub dir: PathBuf,
}

impl TestCerts {
    /// The process-wide certificates, made on first use.
    pub fn get() -> Result<&'static TestCerts> {
        static CERTS: OnceLock<std::result::Result<(tempfile::TempDir, TestCerts), String>> =
            OnceLock::new();
        let made = CERTS.get_or_init(|| {
            let dir = crate::process::instance_dir("tls").map_err(|e| e.to_string())?;
            let certs = make(dir.path()).map_err(|e| e.to_string())?;
            Ok((dir, certs))
        });
        match made {
            Ok((_, c)) => Ok(c),
            Err(e) => Err(Error::Server {
                server: "openssl".into(),
                message: format!("making test certificates failed: {e}"),
            }),
        }
    }
}

fn openssl(dir: &Path, args: &[&str]) -> Result<()> {
    let bin = crate::find_binary("openssl").map_err(|_| Error::MissingBinary {
        binary: "openssl".into(),
        install: "apt-get install -y openssl".into(),
    })?;
    let out = Command::new(&bin)
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|e| Error::io("running openssl", e))?;
    if !out.status.success() {
        return Err(Error::Command {
            command: format!("openssl {}", args.join(" ")),
            status: out.status.to_string(),
            output: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(())
}

fn make_ca(dir: &Path, name: &str, cn: &str) -> Result<()> {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
            "-days",
            "3650",
            "-subj",
            &format!("/CN={cn}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    )
}

fn make(dir: &Path) -> Result<TestCerts> {
    make_ca(dir, "ca", "Furrow Test CA")?;
    make_ca(dir, "other-ca", "Furrow Unrelated CA")?;
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    )?;
    let ext = dir.join("server.ext");
    std::fs::write(
        &ext,
        "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\n\
         basicConstraints=critical,CA:FALSE\n\
         keyUsage=critical,digitalSignature,keyEncipherment\n\
         extendedKeyUsage=serverAuth,clientAuth\n",
    )
    .map_err(|e| Error::io(format!("writing {}", ext.display()), e))?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "3650",
            "-extfile",
            "server.ext",
        ],
    )?;
    Ok(TestCerts {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
        other_ca: dir.join("other-ca.pem"),
        dir: dir.to_path_buf(),
    })
}
