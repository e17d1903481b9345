//! A cross-process lock for one-time builds the test processes share (the MariaDB template data
//! directory, the Python venv): many test processes start at once, one builds, the others wait.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Takes the exclusive `flock` on `path` (created if missing), waiting at most `timeout`; the lock
/// is released when the returned file is dropped. `what` and `log` name the build in a timeout
/// error.
pub(crate) fn build_lock(path: &Path, timeout: Duration, what: &str, log: PathBuf) -> Result<File> {
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    let start = Instant::now();
    // SAFETY: flock on a valid, owned descriptor; released when `lock` is dropped.
    while unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        if start.elapsed() > timeout {
            return Err(Error::Timeout {
                what: format!("{what} {}", path.display()),
                waited: timeout,
                log,
                tail: String::new(),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(lock)
}
