//! Supervised server processes: spawned so they die with the test process, stopped and reaped on drop.
//!
//! `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, not the process. Tests
//! often start servers from short-lived threads (libtest runs each test on its own thread; fixtures
//! start servers in parallel threads), so all servers are forked by one process-lifetime spawner
//! thread: its death means the process is gone, and only then do the servers get SIGKILL.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::port::shared_dir;

/// A request to the spawner thread.
type SpawnJob = (Command, mpsc::Sender<std::io::Result<Child>>);

/// The channel to the process-lifetime spawner thread.
fn spawner() -> &'static Mutex<mpsc::Sender<SpawnJob>> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnJob>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnJob>();
        std::thread::Builder::new()
            .name("testkit-spawner".into())
            .spawn(move || {
                for (mut command, reply) in rx {
                    let _ = reply.send(command.spawn());
                }
            })
            .map(|_| ())
            .unwrap_or_else(|e| eprintln!("testkit: cannot start spawner thread: {e}"));
        Mutex::new(tx)
    })
}

/// Spawns `command` from the spawner thread with `PR_SET_PDEATHSIG(SIGKILL)` set in the child.
fn spawn_tied(mut command: Command) -> std::io::Result<Child> {
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the closure only calls async-signal-safe functions (prctl, getppid) and builds an
    // io::Error from a raw code, which does not allocate.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl: then nobody would reap us.
            if libc::getppid() != parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    let (reply_tx, reply_rx) = mpsc::channel();
    let sent = spawner()
        .lock()
        .map_err(|_| std::io::Error::other("spawner lock poisoned"))?
        .send((command, reply_tx));
    if sent.is_err() {
        return Err(std::io::Error::other("testkit spawner thread is gone"));
    }
    reply_rx
        .recv()
        .map_err(|_| std::io::Error::other("testkit spawner thread is gone"))?
}

/// Last `lines` lines of a log file (empty when unreadable).
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    let Ok(mut file) = File::open(path) else {
        return String::from("(log not readable)");
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(16 * 1024);
    let mut buf = Vec::new();
    if file.seek(SeekFrom::Start(start)).is_err() || file.read_to_end(&mut buf).is_err() {
        return String::from("(log not readable)");
    }
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Creates a fresh per-instance directory under the shared run dir, sweeping dirs of dead processes.
pub(crate) fn instance_dir(kind: &str) -> Result<tempfile::TempDir> {
    let run = shared_dir().join("run");
    std::fs::create_dir_all(&run)
        .map_err(|e| Error::io(format!("creating {}", run.display()), e))?;
    sweep_stale(&run);
    tempfile::Builder::new()
        .prefix(&format!("{kind}-{}-", std::process::id()))
        .tempdir_in(&run)
        .map_err(|e| Error::io(format!("creating an instance dir in {}", run.display()), e))
}

/// Removes instance dirs left by processes that no longer exist (killed before their `Drop` ran).
fn sweep_stale(run: &Path) {
    static SWEPT: OnceLock<()> = OnceLock::new();
    SWEPT.get_or_init(|| {
        let Ok(entries) = std::fs::read_dir(run) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .and_then(|n| n.split('-').nth(1))
                .and_then(|p| p.parse::<libc::pid_t>().ok())
            else {
                continue;
            };
            // SAFETY: kill with signal 0 only checks for existence.
            let gone = unsafe { libc::kill(pid, 0) } != 0
                && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
            if gone {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    });
}

/// A running (or stopped) server process whose output goes to a log file.
#[derive(Debug)]
pub(crate) struct ServerProcess {
    /// Human name, e.g. `redis-server 127.0.0.1:20001`.
    name: String,
    /// The log file that receives stdout and stderr.
    log: PathBuf,
    /// The child, `None` once stopped or killed.
    child: Option<Child>,
    /// True while SIGSTOPped.
    paused: bool,
}

/// What a readiness probe found.
pub(crate) enum Probe {
    /// The server is ready.
    Ready,
    /// Not yet; keep polling.
    NotYet,
    /// The server is up but unusable; stop waiting.
    Fatal(String),
}

impl ServerProcess {
    /// Spawns `program args...` with stdout/stderr appended to `log`.
    pub(crate) fn spawn(
        name: String,
        program: &Path,
        args: &[String],
        log: PathBuf,
    ) -> Result<Self> {
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|e| Error::io(format!("opening log {}", log.display()), e))?;
        let err = out
            .try_clone()
            .map_err(|e| Error::io(format!("duplicating log {}", log.display()), e))?;
        let mut command = Command::new(program);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let child = spawn_tied(command)
            .map_err(|e| Error::io(format!("spawning {} for {name}", program.display()), e))?;
        Ok(ServerProcess {
            name,
            log,
            child: Some(child),
            paused: false,
        })
    }

    /// The server's log file.
    pub(crate) fn log(&self) -> &Path {
        &self.log
    }

    /// The OS process id while running.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// True while the process exists (running or paused).
    pub(crate) fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// An `Exited` error for a child that ended with `status`.
    fn exited(&self, status: ExitStatus) -> Error {
        Error::Exited {
            server: self.name.clone(),
            status: describe(status),
            log: self.log.clone(),
            tail: log_tail(&self.log, 30),
        }
    }

    /// Polls `probe` until it reports ready, the process exits, or `timeout` passes.
    pub(crate) fn wait_ready(
        &mut self,
        timeout: Duration,
        mut probe: impl FnMut() -> Probe,
    ) -> Result<()> {
        let start = Instant::now();
        loop {
            if let Some(child) = &mut self.child {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Err(self.exited(status));
                }
            } else {
                return Err(Error::Server {
                    server: self.name.clone(),
                    message: "not running".into(),
                });
            }
            match probe() {
                Probe::Ready => return Ok(()),
                Probe::Fatal(message) => {
                    return Err(Error::Server {
                        server: self.name.clone(),
                        message: format!("{message}; log: {}", self.log.display()),
                    });
                }
                Probe::NotYet => {}
            }
            if start.elapsed() >= timeout {
                return Err(Error::Timeout {
                    what: format!("{} to accept connections", self.name),
                    waited: timeout,
                    log: self.log.clone(),
                    tail: log_tail(&self.log, 30),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `signal` to the process if it is running.
    fn signal(&self, signal: libc::c_int) {
        if let Some(child) = &self.child {
            // SAFETY: kill on our own (unreaped, hence not recycled) child pid.
            unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        }
    }

    /// SIGKILLs and reaps the process (no-op when not running).
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.paused = false;
    }

    /// SIGTERMs the process and waits up to `timeout` for a clean exit, then SIGKILLs it.
    pub(crate) fn stop(&mut self, timeout: Duration) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        // SAFETY: signals to our own unreaped child.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
            libc::kill(child.id() as libc::pid_t, libc::SIGCONT);
        }
        self.paused = false;
        let start = Instant::now();
        loop {
            match child.try_wait() {
                Ok(Some(_)) => return Ok(()),
                Ok(None) if start.elapsed() < timeout => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(Error::Timeout {
                        what: format!("{} to shut down cleanly (it was SIGKILLed)", self.name),
                        waited: timeout,
                        log: self.log.clone(),
                        tail: log_tail(&self.log, 30),
                    });
                }
            }
        }
    }

    /// SIGSTOPs the process: it keeps its sockets but answers nothing until [`Self::resume`].
    pub(crate) fn pause(&mut self) -> Result<()> {
        self.require_running()?;
        self.signal(libc::SIGSTOP);
        self.paused = true;
        // SIGSTOP is delivered asynchronously: a thread may still finish the request in hand after
        // kill() returns. Wait until every thread of the process shows as stopped, so a test that
        // pauses a server and then expects nothing to be answered is not racing the signal.
        if let Some(pid) = self.pid() {
            let deadline = Instant::now() + Duration::from_secs(5);
            while !all_threads_stopped(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        Ok(())
    }

    /// SIGCONTs a paused process.
    pub(crate) fn resume(&mut self) -> Result<()> {
        self.require_running()?;
        self.signal(libc::SIGCONT);
        self.paused = false;
        Ok(())
    }

    /// True unless the kit stopped or killed the process (a crash is only seen by `is_running`).
    pub(crate) fn is_started(&self) -> bool {
        self.child.is_some()
    }

    /// True while SIGSTOPped by [`Self::pause`].
    pub(crate) fn is_paused(&self) -> bool {
        self.paused
    }

    /// Errors unless the process is alive.
    fn require_running(&mut self) -> Result<()> {
        if self.is_running() {
            Ok(())
        } else {
            Err(Error::Server {
                server: self.name.clone(),
                message: format!("not running; log: {}", self.log.display()),
            })
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `exit code 1` / `killed by signal 9`.
fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => status.to_string(),
    }
}

/// Output of a finished client command.
pub(crate) struct Output {
    /// Captured stdout.
    pub(crate) stdout: String,
}

/// Runs a short-lived client tool with a deadline; non-zero exit or timeout is an error.
///
/// `shown` is the command line used in error messages (with passwords masked).
pub(crate) fn run_client(mut command: Command, shown: &str, timeout: Duration) -> Result<Output> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .map_err(|e| Error::io(format!("running `{shown}`"), e))?;
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(s) = stdout.as_mut() {
            let _ = s.read_to_end(&mut buf);
        }
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(s) = stderr.as_mut() {
            let _ = s.read_to_end(&mut buf);
        }
        buf
    });
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if start.elapsed() < timeout => std::thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let stdout = String::from_utf8_lossy(&out_reader.join().unwrap_or_default()).into_owned();
    let stderr = String::from_utf8_lossy(&err_reader.join().unwrap_or_default()).into_owned();
    match status {
        Some(status) if status.success() => Ok(Output { stdout }),
        other => Err(Error::Command {
            command: shown.to_string(),
            status: match other {
                Some(status) => describe(status),
                None => format!("timed out after {timeout:?}"),
            },
            output: if stderr.trim().is_empty() {
                stdout.trim().to_string()
            } else {
                stderr.trim().to_string()
            },
        }),
    }
}

/// Runs `start` `n` times on parallel threads; the first error wins (already started servers are dropped).
pub(crate) fn start_parallel<T: Send>(
    n: usize,
    what: &str,
    start: impl Fn() -> Result<T> + Sync,
) -> Result<Vec<T>> {
    let results: Vec<Result<T>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..n).map(|_| scope.spawn(&start)).collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(Error::Server {
                        server: what.to_string(),
                        message: "start thread panicked".into(),
                    })
                })
            })
            .collect()
    });
    results.into_iter().collect()
}

/// Whether every thread of process `pid` is stopped (state `T`/`t` in `/proc/PID/task/*/stat`).
/// True when the process is gone or `/proc` cannot be read (nothing left to wait for).
fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return true;
    };
    tasks.flatten().all(|t| {
        let Ok(stat) = std::fs::read_to_string(t.path().join("stat")) else {
            return true; // the thread exited
        };
        // The state follows the command name in parentheses, which may itself hold spaces.
        let state = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next());
        matches!(state, Some('T' | 't') | None)
    })
}
