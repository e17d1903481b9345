//! Structured logging setup (`tracing`), text or JSON lines, on stderr or appended to a file
//! (`--log-file`). SIGUSR1 reopens the file ([`reopen`]), so that logrotate can move it away and the
//! process continues in a new file at the same path (no `copytruncate` needed). The JSON fields are
//! documented in docs/operations.md ("Logs").

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use tracing_subscriber::EnvFilter;

/// The log file and its path, when logging to a file.
struct LogFile {
    path: PathBuf,
    file: Mutex<File>,
}

static LOG_FILE: OnceLock<LogFile> = OnceLock::new();

/// Writes one event to the current log file (the lock makes each event one `write`).
struct FileWriter;

impl Write for FileWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match LOG_FILE.get() {
            Some(l) => l.file.lock().unwrap_or_else(|e| e.into_inner()).write(buf),
            None => io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Installs the global subscriber. `filter` is a level or an `EnvFilter` directive string; `file`:
/// append to this file instead of stderr (stderr if it cannot be opened, with a message).
pub fn init(filter: &str, json: bool, file: Option<&Path>) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|e| {
        eprintln!("invalid log filter `{filter}` ({e}); using `info`");
        EnvFilter::new("info")
    });
    let to_file = match file.map(|p| (p, open_append(p))) {
        Some((p, Ok(f))) => LOG_FILE
            .set(LogFile {
                path: p.to_path_buf(),
                file: Mutex::new(f),
            })
            .is_ok(),
        Some((p, Err(e))) => {
            eprintln!(
                "cannot open log file {}: {e}; logging to stderr",
                p.display()
            );
            false
        }
        None => false,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| FileWriter)
        .with_ansi(!to_file)
        .with_target(true);
    let result = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    if let Err(e) = result {
        eprintln!("logging already initialised: {e}");
    }
}

/// Reopens the log file at its path (after rotation moved it). `Ok(false)`: logging goes to stderr,
/// nothing to reopen.
pub fn reopen() -> io::Result<bool> {
    let Some(l) = LOG_FILE.get() else {
        return Ok(false);
    };
    let f = open_append(&l.path)?;
    *l.file.lock().unwrap_or_else(|e| e.into_inner()) = f;
    Ok(true)
}

/// For roles other than the proxy (which handles SIGUSR1 with its other signals): a small thread
/// that reopens the log file on SIGUSR1, so that log rotation works for `furrow control` too (without
/// it, SIGUSR1 would end the process). The handler is installed before this returns.
pub fn reopen_on_sigusr1() {
    use tokio::signal::unix::{SignalKind, signal};
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot watch SIGUSR1; log files are not reopened");
            return;
        }
    };
    let usr1 = {
        let _guard = rt.enter();
        signal(SignalKind::user_defined1())
    };
    let mut usr1 = match usr1 {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot watch SIGUSR1; log files are not reopened");
            return;
        }
    };
    let spawned = std::thread::Builder::new()
        .name("furrow-logs".into())
        .spawn(move || {
            rt.block_on(async {
                while usr1.recv().await.is_some() {
                    match reopen() {
                        Ok(_) => tracing::info!("SIGUSR1: log file reopened"),
                        Err(e) => {
                            tracing::error!(error = %e, "SIGUSR1: cannot reopen the log file")
                        }
                    }
                }
            });
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the SIGUSR1 thread; log files are not reopened");
    }
}
