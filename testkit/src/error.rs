//! The test kit's error type: every variant says what failed and where the logs are.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// Result alias used throughout the test kit.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while starting, driving or stopping test servers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A required executable is not installed.
    #[error("`{binary}` was not found (searched PATH and /usr/sbin); install it with `{install}`")]
    MissingBinary {
        /// The executable that was looked for.
        binary: String,
        /// The command that installs it.
        install: String,
    },
    /// A needed system package (not a single binary) is not installed.
    #[error("{what} is not available; install it with `{install}`\n{output}")]
    MissingPackage {
        /// What is missing.
        what: String,
        /// The command that installs it.
        install: String,
        /// What the failing command printed, if anything.
        output: String,
    },
    /// A filesystem or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What the kit was doing.
        context: String,
        /// The underlying OS error.
        source: io::Error,
    },
    /// A server process exited while it was expected to run.
    #[error("{server} exited unexpectedly ({status}); log: {}\n--- log tail ---\n{tail}", log.display())]
    Exited {
        /// Which server (binary and address).
        server: String,
        /// Its exit status.
        status: String,
        /// The log file to read.
        log: PathBuf,
        /// The last lines of that log.
        tail: String,
    },
    /// A bounded wait ran out.
    #[error("timed out after {waited:?} waiting for {what}; log: {}\n--- log tail ---\n{tail}", log.display())]
    Timeout {
        /// What was being waited for.
        what: String,
        /// How long the kit waited.
        waited: Duration,
        /// The log file of the server concerned.
        log: PathBuf,
        /// The last lines of that log.
        tail: String,
    },
    /// A client tool (`mariadb`, `redis-cli`) failed or was killed after its timeout.
    #[error("`{command}` failed ({status}): {output}")]
    Command {
        /// The command line (passwords masked).
        command: String,
        /// Exit status or "timed out".
        status: String,
        /// Its stderr (or stdout when stderr is empty).
        output: String,
    },
    /// A server answered with an error, or is in a state the kit cannot work with.
    #[error("{server}: {message}")]
    Server {
        /// Which server.
        server: String,
        /// What it said or what is wrong.
        message: String,
    },
    /// No loopback port could be reserved.
    #[error("no free loopback port found after {tried} attempts (lock dir: {})", dir.display())]
    NoFreePort {
        /// How many ports were tried.
        tried: usize,
        /// Where the per-port lock files live.
        dir: PathBuf,
    },
}

impl Error {
    /// Wraps an I/O error with what the kit was doing.
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// True when a server failed because its port was taken by someone else (start is retried).
    pub(crate) fn is_addr_in_use(&self) -> bool {
        match self {
            Error::Exited { tail, .. } | Error::Timeout { tail, .. } => {
                tail.contains("Address already in use")
                    || tail.contains("errno: 98")
                    || tail.contains("error: 98")
            }
            _ => false,
        }
    }
}
