//! `mariadbd` instances copied from a cached, pre-initialised template datadir.
//!
//! `mariadb-install-db` runs once per server version per machine: the first process to need it
//! builds `<shared dir>/mariadb-template-<version>/` under an `flock`, every instance copies it.
//! The template already holds the users: `root@'%'` with [`ROOT_PASSWORD`] and the application
//! user [`APP_USER`]/[`APP_PASSWORD`] with all privileges (also used for replication). Its binlog is
//! empty, so a primary and its replicas start from identical data and an empty GTID state.

use std::fs::OpenOptions;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::binary::find_binary;
use crate::error::{Error, Result};
use crate::port::{PortLease, reserve_port, shared_dir};
use crate::process::{Probe, ServerProcess, instance_dir, run_client, start_parallel};

/// Password of `root@'%'` on every instance.
pub const ROOT_PASSWORD: &str = "furrow-root";
/// The application user created on every instance (all privileges, `WITH GRANT OPTION`).
pub const APP_USER: &str = "furrow";
/// Password of [`APP_USER`].
pub const APP_PASSWORD: &str = "furrow-pass";

/// Bump when the template's contents change, so stale caches are not reused.
const TEMPLATE_FORMAT: u32 = 2;
/// How many times a start is retried when the port turns out to be taken.
const START_ATTEMPTS: usize = 5;
/// Default deadline for one `sql` call.
const SQL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to wait for the template build lock held by another process.
const TEMPLATE_LOCK_TIMEOUT: Duration = Duration::from_secs(180);

/// Rows of a result: one `Vec` per row, `None` for SQL NULL.
pub type Rows = Vec<Vec<Option<String>>>;

/// Options for a [`MariaDb`] instance.
#[derive(Debug, Clone)]
pub struct MariaDbConfig {
    server_id: Option<u32>,
    extra_args: Vec<String>,
    startup_timeout: Duration,
}

impl Default for MariaDbConfig {
    fn default() -> Self {
        MariaDbConfig {
            server_id: None,
            extra_args: Vec::new(),
            startup_timeout: Duration::from_secs(60),
        }
    }
}

impl MariaDbConfig {
    /// Defaults: server id = port (unique among live instances), 60 s startup timeout.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `--server-id` explicitly.
    pub fn server_id(mut self, id: u32) -> Self {
        self.server_id = Some(id);
        self
    }

    /// Appends a raw `mariadbd` option such as `"--max-connections=500"` (later options win).
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.extra_args.push(arg.into());
        self
    }

    /// How long to wait for the server to accept connections.
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = timeout;
        self
    }
}

/// A running `mariadbd` on 127.0.0.1 with binlog and GTID on, killed and cleaned up on drop.
#[derive(Debug)]
pub struct MariaDb {
    process: ServerProcess,
    config: MariaDbConfig,
    server_id: u32,
    port: PortLease,
    // Last: dropped after the process is killed.
    dir: tempfile::TempDir,
}

/// True when running as root (mariadbd then needs `--user=root`).
fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Options shared by the template bootstrap and every instance.
fn common_args(datadir: &Path) -> Vec<String> {
    let mut args = vec![
        "--no-defaults".to_string(),
        format!("--datadir={}", datadir.display()),
        "--innodb-buffer-pool-size=32M".into(),
        "--innodb-log-file-size=8M".into(),
    ];
    if is_root() {
        args.push("--user=root".into());
    }
    args
}

/// `mariadbd --version`, used to key the template cache.
fn server_version(mariadbd: &Path) -> Result<String> {
    let out = run_client(
        {
            let mut c = Command::new(mariadbd);
            c.arg("--version");
            c
        },
        "mariadbd --version",
        Duration::from_secs(30),
    )?;
    Ok(out.stdout.trim().to_string())
}

/// A file-name-safe short key for a version string.
fn version_key(version: &str) -> String {
    // FNV-1a: stable across processes (std's hasher is randomly seeded).
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in version.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    let ver: String = version
        .split_whitespace()
        .nth(2)
        .unwrap_or("unknown")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '-')
        .collect();
    format!("{ver}-{hash:08x}-f{TEMPLATE_FORMAT}")
}

/// The template datadir for the installed `mariadbd`, building it if no process has yet.
pub fn template_datadir() -> Result<PathBuf> {
    static TEMPLATE: OnceLock<PathBuf> = OnceLock::new();
    if let Some(path) = TEMPLATE.get() {
        return Ok(path.clone());
    }
    let mariadbd = find_binary("mariadbd")?;
    let install_db = find_binary("mariadb-install-db")?;
    let key = version_key(&server_version(&mariadbd)?);
    let root = shared_dir();
    std::fs::create_dir_all(&root)
        .map_err(|e| Error::io(format!("creating {}", root.display()), e))?;
    let dir = root.join(format!("mariadb-template-{key}"));
    let marker = dir.join(".furrow-template-complete");
    if !marker.exists() {
        let lock_path = root.join(format!("mariadb-template-{key}.lock"));
        let lock = crate::lock::build_lock(
            &lock_path,
            TEMPLATE_LOCK_TIMEOUT,
            "the template build lock",
            root.join(format!("mariadb-template-{key}.log")),
        )?;
        if !marker.exists() {
            build_template(&mariadbd, &install_db, &root, &key, &dir)?;
            std::fs::write(&marker, b"ok\n")
                .map_err(|e| Error::io(format!("writing {}", marker.display()), e))?;
        }
        drop(lock);
    }
    Ok(TEMPLATE.get_or_init(|| dir).clone())
}

/// Runs `mariadb-install-db` and a bootstrap that creates the users, then moves the result to `dir`.
fn build_template(
    mariadbd: &Path,
    install_db: &Path,
    root: &Path,
    key: &str,
    dir: &Path,
) -> Result<()> {
    let staging = root.join(format!("mariadb-template-{key}.staging"));
    let log = root.join(format!("mariadb-template-{key}.log"));
    let _ = std::fs::remove_dir_all(&staging);
    let _ = std::fs::remove_dir_all(dir);
    let mut install = Command::new(install_db);
    install
        .arg("--no-defaults")
        .arg(format!("--datadir={}", staging.display()))
        .arg("--auth-root-authentication-method=normal")
        .arg("--skip-test-db")
        .arg("--innodb-buffer-pool-size=32M")
        .arg("--innodb-log-file-size=8M");
    if is_root() {
        install.arg("--user=root");
    }
    let shown = format!("mariadb-install-db --datadir={}", staging.display());
    let out = run_client(install, &shown, Duration::from_secs(120))?;
    std::fs::write(&log, out.stdout)
        .map_err(|e| Error::io(format!("writing {}", log.display()), e))?;

    let bootstrap_sql = format!(
        "FLUSH PRIVILEGES;\n\
         DELETE FROM mysql.global_priv WHERE User='' OR (User='root' AND Host<>'localhost');\n\
         DELETE FROM mysql.proxies_priv WHERE Host<>'localhost';\n\
         FLUSH PRIVILEGES;\n\
         ALTER USER 'root'@'localhost' IDENTIFIED BY '{ROOT_PASSWORD}';\n\
         CREATE USER 'root'@'%' IDENTIFIED BY '{ROOT_PASSWORD}';\n\
         GRANT ALL PRIVILEGES ON *.* TO 'root'@'%' WITH GRANT OPTION;\n\
         CREATE USER '{APP_USER}'@'%' IDENTIFIED BY '{APP_PASSWORD}';\n\
         GRANT ALL PRIVILEGES ON *.* TO '{APP_USER}'@'%' WITH GRANT OPTION;\n"
    );
    let log_file = OpenOptions::new()
        .append(true)
        .open(&log)
        .map_err(|e| Error::io(format!("opening {}", log.display()), e))?;
    let log_err = log_file
        .try_clone()
        .map_err(|e| Error::io(format!("opening {}", log.display()), e))?;
    let mut child = Command::new(mariadbd)
        .args(common_args(&staging))
        .arg("--bootstrap")
        .stdin(Stdio::piped())
        .stdout(log_file)
        .stderr(log_err)
        .spawn()
        .map_err(|e| Error::io("spawning mariadbd --bootstrap", e))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(bootstrap_sql.as_bytes())
            .map_err(|e| Error::io("writing bootstrap SQL to mariadbd", e))?;
    }
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if start.elapsed() < Duration::from_secs(120) => {
                std::thread::sleep(Duration::from_millis(20));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::Timeout {
                    what: "mariadbd --bootstrap (template users)".into(),
                    waited: Duration::from_secs(120),
                    log: log.clone(),
                    tail: crate::process::log_tail(&log, 30),
                });
            }
        }
    };
    if !status.success() {
        return Err(Error::Exited {
            server: "mariadbd --bootstrap (template users)".into(),
            status: status.to_string(),
            log: log.clone(),
            tail: crate::process::log_tail(&log, 30),
        });
    }
    std::fs::rename(&staging, dir).map_err(|e| {
        Error::io(
            format!("moving {} to {}", staging.display(), dir.display()),
            e,
        )
    })
}

/// Recursively copies a datadir (regular files and directories only).
fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(|e| Error::io(format!("creating {}", to.display()), e))?;
    let entries =
        std::fs::read_dir(from).map_err(|e| Error::io(format!("reading {}", from.display()), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(format!("reading {}", from.display()), e))?;
        let target = to.join(entry.file_name());
        let kind = entry
            .file_type()
            .map_err(|e| Error::io(format!("stat {}", entry.path().display()), e))?;
        if kind.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else if kind.is_file() && entry.file_name() != ".furrow-template-complete" {
            std::fs::copy(entry.path(), &target).map_err(|e| {
                Error::io(
                    format!("copying {} to {}", entry.path().display(), target.display()),
                    e,
                )
            })?;
        }
    }
    Ok(())
}

impl MariaDb {
    /// Starts an instance with default options.
    pub fn start() -> Result<Self> {
        Self::start_with(MariaDbConfig::new())
    }

    /// Starts an instance with `config`, retrying on another port if its port was taken.
    pub fn start_with(config: MariaDbConfig) -> Result<Self> {
        let template = template_datadir()?;
        let mut last = None;
        for _ in 0..START_ATTEMPTS {
            match Self::try_start(&template, config.clone()) {
                Ok(server) => return Ok(server),
                Err(e) if e.is_addr_in_use() => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(Error::NoFreePort {
            tried: START_ATTEMPTS,
            dir: shared_dir(),
        }))
    }

    /// Starts `n` independent instances in parallel (e.g. shards).
    pub fn start_many(n: usize, config: MariaDbConfig) -> Result<Vec<Self>> {
        // Build the template once before the parallel starts queue on its lock.
        template_datadir()?;
        start_parallel(n, "mariadbd", || Self::start_with(config.clone()))
    }

    /// One start attempt on a freshly reserved port and a fresh copy of the template.
    fn try_start(template: &Path, config: MariaDbConfig) -> Result<Self> {
        let port = reserve_port()?;
        let dir = instance_dir("mariadb")?;
        copy_dir(template, &dir.path().join("data"))?;
        std::fs::create_dir_all(dir.path().join("tmp"))
            .map_err(|e| Error::io(format!("creating {}/tmp", dir.path().display()), e))?;
        let server_id = config.server_id.unwrap_or(u32::from(port.port()));
        let process = Self::spawn(dir.path(), port.port(), server_id, &config)?;
        let mut server = MariaDb {
            process,
            config,
            server_id,
            port,
            dir,
        };
        server.wait_ready()?;
        Ok(server)
    }

    /// Spawns `mariadbd` on an existing instance directory.
    fn spawn(
        dir: &Path,
        port: u16,
        server_id: u32,
        config: &MariaDbConfig,
    ) -> Result<ServerProcess> {
        let mariadbd = find_binary("mariadbd")?;
        let mut args = common_args(&dir.join("data"));
        args.extend([
            format!("--port={port}"),
            "--bind-address=127.0.0.1".into(),
            format!("--socket={}", dir.join("mysqld.sock").display()),
            format!("--pid-file={}", dir.join("mysqld.pid").display()),
            format!("--tmpdir={}", dir.join("tmp").display()),
            "--skip-name-resolve".into(),
            format!("--server-id={server_id}"),
            "--log-bin=mysql-bin".into(),
            "--relay-log=relay-bin".into(),
            "--log-slave-updates=ON".into(),
            "--binlog-format=ROW".into(),
            "--gtid-strict-mode=ON".into(),
            "--master-retry-count=100000".into(),
            "--slave-net-timeout=5".into(),
            "--sync-binlog=0".into(),
            "--innodb-flush-log-at-trx-commit=2".into(),
            "--innodb-doublewrite=0".into(),
            "--performance-schema=OFF".into(),
            "--character-set-server=utf8mb4".into(),
            "--max-connections=500".into(),
        ]);
        args.extend(config.extra_args.iter().cloned());
        ServerProcess::spawn(
            format!("mariadbd 127.0.0.1:{port}"),
            &mariadbd,
            &args,
            dir.join("mariadbd.log"),
        )
    }

    /// Waits until the server sends a MySQL handshake (protocol 10) on its port.
    fn wait_ready(&mut self) -> Result<()> {
        let addr = self.addr();
        let timeout = self.config.startup_timeout;
        self.process.wait_ready(timeout, || {
            use std::io::Read;
            let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500))
            else {
                return Probe::NotYet;
            };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let mut head = [0u8; 5];
            match stream.read_exact(&mut head) {
                Ok(()) if head[4] == 10 => Probe::Ready,
                _ => Probe::NotYet,
            }
        })
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port.port()))
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port.port()
    }

    /// The `--server-id`.
    pub fn server_id(&self) -> u32 {
        self.server_id
    }

    /// `mysql://furrow:<password>@127.0.0.1:<port>` (the application user).
    pub fn url(&self) -> String {
        format!(
            "mysql://{APP_USER}:{APP_PASSWORD}@127.0.0.1:{}",
            self.port()
        )
    }

    /// The instance directory (`data/`, `tmp/`, socket, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The datadir.
    pub fn datadir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The Unix socket path (usable while running).
    pub fn socket_path(&self) -> PathBuf {
        self.dir.path().join("mysqld.sock")
    }

    /// The server's error log (stdout and stderr of `mariadbd`).
    pub fn log_path(&self) -> &Path {
        self.process.log()
    }

    /// The OS process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// Runs `query` (one or more `;`-separated statements) as root; see [`sql_at`].
    pub fn sql(&self, query: &str) -> Result<Rows> {
        sql_at(self.addr(), "root", ROOT_PASSWORD, None, query)
    }

    /// Runs `query` as root and returns the column names (of the first row; empty without rows) and rows.
    pub fn sql_with_columns(&self, query: &str) -> Result<(Vec<String>, Rows)> {
        let text = run_mariadb(self.addr(), "root", ROOT_PASSWORD, None, query)?;
        Ok(parse_xml(&text))
    }

    /// Runs `query` as root and returns the first column of the first row (`None` for no row or NULL).
    pub fn sql_value(&self, query: &str) -> Result<Option<String>> {
        Ok(self
            .sql(query)?
            .into_iter()
            .next()
            .and_then(|row| row.into_iter().next())
            .flatten())
    }

    /// True while the process exists (running or paused).
    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    /// True unless stopped or killed through the kit (does not check for a crash; see [`Self::is_running`]).
    pub fn is_started(&self) -> bool {
        self.process.is_started()
    }

    /// True while SIGSTOPped by [`Self::pause`].
    pub fn is_paused(&self) -> bool {
        self.process.is_paused()
    }

    /// Clean shutdown with SIGTERM (SIGKILL after 60 s); [`Self::restart`] brings it back.
    pub fn stop(&mut self) -> Result<()> {
        self.process.stop(Duration::from_secs(60))
    }

    /// SIGKILLs the server (crash: InnoDB recovers on restart).
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// SIGSTOPs the server: connections hang until [`Self::resume`].
    pub fn pause(&mut self) -> Result<()> {
        self.process.pause()
    }

    /// SIGCONTs a paused server.
    pub fn resume(&mut self) -> Result<()> {
        self.process.resume()
    }

    /// Starts a stopped or killed server again on the same port, datadir and options.
    ///
    /// A replica resumes replicating from where it was (its `CHANGE MASTER` settings persist).
    pub fn restart(&mut self) -> Result<()> {
        self.process.kill();
        self.process = Self::spawn(self.dir.path(), self.port(), self.server_id, &self.config)?;
        self.wait_ready()
    }

    /// Makes this server a GTID replica of `primary` and starts replication.
    pub fn replicate_from(&self, primary: &MariaDb) -> Result<()> {
        self.replicate_from_addr(primary.addr())
    }

    /// Makes this server a GTID replica of the server at `primary` (the app user must exist there).
    pub fn replicate_from_addr(&self, primary: SocketAddr) -> Result<()> {
        self.sql(&format!(
            "STOP SLAVE; CHANGE MASTER TO MASTER_HOST='{}', MASTER_PORT={}, \
             MASTER_USER='{APP_USER}', MASTER_PASSWORD='{APP_PASSWORD}', \
             MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1; START SLAVE;",
            primary.ip(),
            primary.port()
        ))?;
        Ok(())
    }
}

/// Runs `query` with the `mariadb` CLI (batch mode, XML output) against `addr` and parses the rows.
///
/// NULL is exact: SQL NULL is `None`, the string `'NULL'` is `Some("NULL")`; tabs, newlines and
/// markup characters in values survive. With several statements the rows of all result sets are
/// concatenated. Fails (with the client's message) on SQL errors and after 30 s.
pub fn sql_at(
    addr: SocketAddr,
    user: &str,
    password: &str,
    database: Option<&str>,
    query: &str,
) -> Result<Rows> {
    run_mariadb(addr, user, password, database, query).map(|text| parse_xml(&text).1)
}

/// Runs the `mariadb` CLI with XML output and returns its stdout.
fn run_mariadb(
    addr: SocketAddr,
    user: &str,
    password: &str,
    database: Option<&str>,
    query: &str,
) -> Result<String> {
    let mut command = Command::new(find_binary("mariadb")?);
    command
        .arg("--no-defaults")
        .arg("--protocol=TCP")
        .arg(format!("--host={}", addr.ip()))
        .arg(format!("--port={}", addr.port()))
        .arg(format!("--user={user}"))
        .arg(format!("--password={password}"))
        .arg("--connect-timeout=10")
        .arg("--batch")
        .arg("--xml")
        // The CLI strips comments by default; Furrow's routing hints live in comments.
        .arg("--comments");
    if let Some(db) = database {
        command.arg(format!("--database={db}"));
    }
    command.arg("--execute").arg(query);
    let shown = format!(
        "mariadb -h{} -P{} -u{user} -e {query:?}",
        addr.ip(),
        addr.port()
    );
    Ok(run_client(command, &shown, SQL_TIMEOUT)?.stdout)
}

/// Parses `mariadb --xml` output into the column names of the first row and all rows.
///
/// Values and attributes have `<`, `>`, `&` and `"` escaped by the client, so a plain scan for
/// `<row>` and `<field` cannot be fooled by data.
fn parse_xml(text: &str) -> (Vec<String>, Rows) {
    let mut names = Vec::new();
    let mut rows = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("<row>") {
        rest = &rest[start + "<row>".len()..];
        let end = rest.find("</row>").unwrap_or(rest.len());
        let mut body = &rest[..end];
        rest = &rest[end..];
        let first = rows.is_empty();
        let mut row = Vec::new();
        while let Some(open) = body.find("<field") {
            body = &body[open + "<field".len()..];
            let Some(close) = body.find('>') else {
                break;
            };
            let tag = &body[..close];
            body = &body[close + 1..];
            if first {
                let name = tag
                    .split_once("name=\"")
                    .and_then(|(_, n)| n.split_once('"'))
                    .map(|(n, _)| unescape_xml(n))
                    .unwrap_or_default();
                names.push(name);
            }
            if tag.ends_with('/') {
                row.push(if tag.contains("xsi:nil=\"true\"") {
                    None
                } else {
                    Some(String::new())
                });
                continue;
            }
            let end = body.find("</field>").unwrap_or(body.len());
            row.push(Some(unescape_xml(&body[..end])));
            body = &body[end..];
        }
        rows.push(row);
    }
    (names, rows)
}

/// Undoes XML character escaping (`&lt;`, `&gt;`, `&amp;`, `&quot;`, `&apos;`, `&#N;`, `&#xN;`).
fn unescape_xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let Some(semi) = rest.find(';') else {
            break;
        };
        let entity = &rest[1..semi];
        let decoded = match entity {
            "lt" => Some('<'),
            "gt" => Some('>'),
            "amp" => Some('&'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_xml_with_nulls_escapes_and_several_result_sets() {
        let text = "<?xml version=\"1.0\"?>\n\n<resultset statement=\"select &lt;row&gt;\" xmlns:xsi=\"x\">\n  <row>\n\t<field name=\"a\">1</field>\n\t<field name=\"NULL\" xsi:nil=\"true\" />\n\t<field name=\"s\">NULL</field>\n\t<field name=\"t\">a\tb\n&lt;&amp;&gt;&quot;'&#65;</field>\n\t<field name=\"\"></field>\n  </row>\n</resultset>\n<?xml version=\"1.0\"?>\n<resultset statement=\"select 2\">\n  <row>\n\t<field name=\"2\">2</field>\n  </row>\n</resultset>\n";
        let (names, rows) = parse_xml(text);
        assert_eq!(names, ["a", "NULL", "s", "t", ""]);
        assert_eq!(
            rows,
            vec![
                vec![
                    Some("1".into()),
                    None,
                    Some("NULL".into()),
                    Some("a\tb\n<&>\"'A".into()),
                    Some(String::new()),
                ],
                vec![Some("2".into())],
            ]
        );
        assert_eq!(
            parse_xml("<resultset statement=\"x\"></resultset>"),
            (vec![], vec![])
        );
        assert_eq!(unescape_xml("&bogus; & &amp;"), "&bogus; & &");
    }

    #[test]
    fn version_key_is_stable_and_path_safe() {
        let v = "mariadbd  Ver 10.11.19-MariaDB-0+deb12u1 for debian-linux-gnu on x86_64";
        let key = version_key(v);
        assert_eq!(key, version_key(v));
        assert!(key.starts_with("10.11.19-MariaDB-0deb12u1-"), "{key}");
        assert!(!key.contains('/'));
        assert_ne!(key, version_key("mariadbd Ver 11.4.2 for linux"));
    }
}
