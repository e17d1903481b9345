//! The errors of the Redis proxy, classified, and their RESP encoding.
//!
//! Every error the proxy itself answers a client with is an [`Error`]: its variant is the kind,
//! [`Error::side`] says which side failed (the client's request, a backend, the proxy itself) and
//! [`Error::retryable`] whether the same request may succeed later (ejection counts those). The
//! wire form is made in one place, [`Error::write_reply`]: `-<CODE> <message>\r\n`, with the code
//! and wording Redis uses where Redis has the same error, since clients match on them.

use std::fmt;

use router::redis::{MergeError, RedisRouteError};

/// Which side of the proxy an error comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client's request is wrong or not allowed.
    Client,
    /// A backend could not be used or answered something unusable.
    Backend,
    /// The proxy itself (its configuration or state) cannot serve the request.
    Internal,
}

/// Why a backend cannot serve a request (the tail of `ERR backend ... unavailable: <why>`).
#[derive(Debug, thiserror::Error)]
pub enum BackendFailure {
    /// The admin marked the server offline.
    #[error("marked offline by the admin")]
    Offline,
    /// The server is ejected after repeated failures, until its retry time.
    #[error("ejected after repeated failures")]
    Ejected,
    /// The connection's queue is full.
    #[error("too many queued requests")]
    Overloaded,
    /// The TCP connect failed or timed out.
    #[error("connect failed: {0}")]
    Connect(#[source] std::io::Error),
    /// Writing to the server failed.
    #[error("write failed: {0}")]
    Write(#[source] std::io::Error),
    /// Reading from the server failed.
    #[error("read failed: {0}")]
    Read(#[source] std::io::Error),
    /// The server closed the connection.
    #[error("connection closed by the server")]
    Closed,
    /// The oldest request in flight got no reply in time.
    #[error("request timed out after {0} ms")]
    Timeout(u128),
    /// The server sent bytes that are not RESP.
    #[error("bad reply from the server: {0}")]
    BadReply(#[source] codec::resp::RespError),
    /// The server sent a reply nothing was waiting for.
    #[error("unexpected reply from the server")]
    UnexpectedReply,
    /// AUTH, HELLO or SELECT on a new connection failed (the server's error text).
    #[error("handshake failed: {0}")]
    Handshake(String),
}

impl BackendFailure {
    /// Whether the server may serve the request later: connection failures pass (the connection
    /// reconnects, an ejection ends); a refusal by the admin or a full queue is not a failure of
    /// the server.
    pub fn retryable(&self) -> bool {
        !matches!(self, Self::Offline | Self::Ejected | Self::Overloaded)
    }
}

/// An error the proxy answers a client with; the variant is its kind.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    // --- the request ---
    /// A malformed or oversized request (the session closes after it).
    #[error("{0}")]
    Protocol(#[source] codec::resp::RespError),
    /// Before authentication, a bulk over Redis's pre-auth cap.
    #[error("Protocol error: unauthenticated bulk length")]
    PreauthBulkLength,
    /// Before authentication, an array over Redis's pre-auth cap.
    #[error("Protocol error: unauthenticated multibulk length")]
    PreauthMultibulkLength,
    /// A command Redis does not know; `args` is the quoted start of its arguments, as Redis
    /// quotes them.
    #[error("unknown command '{name}', with args beginning with: {args}")]
    UnknownCommand {
        /// The command name as sent.
        name: String,
        /// `'a' 'b' ` (each argument cut to 128 bytes, at most 16).
        args: String,
    },
    /// A subcommand the container command does not have.
    #[error("unknown subcommand '{sub}'. Try {parent} HELP.")]
    UnknownSubcommand {
        /// The subcommand as sent.
        sub: String,
        /// The container command, upper case.
        parent: String,
    },
    /// The command got the wrong number of arguments.
    #[error("wrong number of arguments for '{0}' command")]
    WrongArity(&'static str),
    /// The keys of the command cannot be found in its arguments.
    #[error("{0}")]
    KeyArguments(#[source] RedisRouteError),
    /// A command the proxy does not run, and why.
    #[error("unknown command '{name}' for the proxy: {reason}")]
    Unsupported {
        /// The command name as sent.
        name: String,
        /// Why the proxy does not run it.
        reason: &'static str,
    },
    /// A session command the proxy has no implementation of.
    #[error("unknown command '{0}' for the proxy")]
    NotImplemented(&'static str),
    /// The keys of a command that must run on one shard are on several.
    #[error("Keys in request don't hash to the same slot")]
    CrossSlot,
    /// A command outside (P|S)SUBSCRIBE / ... in RESP2 subscribed mode.
    #[error(
        "Can't execute '{0}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context"
    )]
    SubscribedContext(&'static str),
    /// A SCAN cursor that is not a number.
    #[error("invalid cursor")]
    InvalidCursor,
    /// SELECT beyond the 16 databases.
    #[error("DB index is out of range")]
    DbIndexOutOfRange,
    /// An argument that must be an integer is not.
    #[error("value is not an integer or out of range")]
    NotAnInteger,
    /// Arguments that do not parse.
    #[error("syntax error")]
    Syntax,
    /// CLIENT SETNAME with a name Redis refuses.
    #[error("Client names cannot contain spaces, newlines or special characters.")]
    BadClientName,
    /// CLIENT UNBLOCK with another reason than TIMEOUT or ERROR.
    #[error("CLIENT UNBLOCK reason should be TIMEOUT or ERROR")]
    BadUnblockReason,
    /// HELLO with a version that is not a number.
    #[error("Protocol version is not an integer or out of range")]
    BadProtocolVersion,
    /// HELLO with a version other than 2 or 3.
    #[error("unsupported protocol version")]
    UnsupportedProtocol,
    /// HELLO with an option it does not have.
    #[error("Syntax error in HELLO option '{0}'")]
    HelloSyntax(String),

    // --- authentication and permissions ---
    /// A command before AUTH on a listener with users.
    #[error("Authentication required.")]
    NoAuth,
    /// HELLO without AUTH before authentication.
    #[error(
        "HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time"
    )]
    HelloNoAuth,
    /// AUTH on a listener without users.
    #[error(
        "AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?"
    )]
    AuthNotConfigured,
    /// A wrong user or password.
    #[error("invalid username-password pair or user is disabled.")]
    WrongPass,
    /// The user's rules do not allow the command.
    #[error("this user has no permissions to run the '{0}' command")]
    CommandDenied(&'static str),
    /// An admin or dangerous command on an open listener (no users) that does not allow them.
    #[error(
        "this user has no permissions to run the '{command}' command: admin and dangerous commands are refused on listener '{listener}', which has no users (set allow_admin_commands = true on the listener to allow them)"
    )]
    AdminRefused {
        /// The command.
        command: &'static str,
        /// The listener.
        listener: String,
    },
    /// The user's rules do not allow one of the keys.
    #[error("this user has no permissions to access one of the keys used as arguments")]
    KeyDenied,
    /// The listener has as many clients as it allows.
    #[error("max number of clients reached")]
    MaxClients,
    /// A governance concurrency limit refused the command (too many awaiting their replies).
    #[error("max number of concurrent commands reached for user '{user}' ({max} in flight) {rule}")]
    OverConcurrency {
        /// The user (`default` without one).
        user: String,
        /// The limit.
        max: u32,
        /// The rule and its version.
        rule: String,
    },
    /// A governance caller list refused the user logging in (the caller of a proxy is its user).
    #[error("caller '{user}' refused by a governance rule {rule}")]
    CallerRefused {
        /// The user.
        user: String,
        /// The rule and its version.
        rule: String,
    },
    /// A governance rate limit refused the command.
    #[error(
        "max number of commands per second reached for user '{user}' ({qps} per second) {rule}"
    )]
    RateLimited {
        /// The user (`default` without one).
        user: String,
        /// The limit.
        qps: f64,
        /// The rule and its version.
        rule: String,
    },

    // --- transactions ---
    /// A command Redis refuses inside MULTI.
    #[error("Command not allowed inside a transaction")]
    NotInTransaction,
    /// A command the proxy cannot queue inside MULTI.
    #[error("'{0}' cannot be used inside MULTI through the proxy")]
    NotThroughProxyInMulti(&'static str),
    /// MULTI inside MULTI.
    #[error("MULTI calls can not be nested")]
    NestedMulti,
    /// DISCARD outside MULTI.
    #[error("DISCARD without MULTI")]
    DiscardWithoutMulti,
    /// WATCH inside MULTI.
    #[error("WATCH inside MULTI is not allowed")]
    WatchInMulti,
    /// EXEC outside MULTI.
    #[error("EXEC without MULTI")]
    ExecWithoutMulti,
    /// A command that cannot run while its slot moves to another server (transactions, blocking
    /// commands, multi-key commands whose keys would end on two servers): Redis Cluster's code.
    #[error("slot {slot} is migrating to another server; {what} waits until the move is done")]
    SlotMigrating {
        /// The slot.
        slot: u16,
        /// What is refused.
        what: &'static str,
    },
    /// Moving a key to its new owner failed (the command was not run).
    #[error("moving the key to its new server failed, the command was not run: {0}")]
    KeyMoveFailed(String),
    /// EXEC after a command was refused while queueing.
    #[error("Transaction discarded because of previous errors.")]
    ExecAbort,

    // --- backends ---
    /// No server for the key (a cluster whose map does not cover it yet).
    #[error("no backend server for this key")]
    NoServerForKey,
    /// No server to send to (a cluster whose map does not cover it yet).
    #[error("no backend server")]
    NoServer,
    /// A server cannot serve the request.
    #[error("backend {server} ({address}) unavailable: {why}")]
    BackendUnavailable {
        /// Server name.
        server: String,
        /// `host:port`.
        address: String,
        /// Why.
        why: BackendFailure,
    },
    /// A configured server has no health state in the registry (a pool cannot be built).
    #[error("no backend state for server {0}")]
    NoBackendState(String),
    /// The parts of a split or fan-out command cannot be merged.
    #[error("{0}")]
    Merge(#[source] MergeError),
}

impl Error {
    /// Which side failed.
    pub fn side(&self) -> Side {
        match self {
            Self::NoServerForKey
            | Self::NoServer
            | Self::BackendUnavailable { .. }
            | Self::KeyMoveFailed(_) => Side::Backend,
            Self::Merge(MergeError::NoShard) => Side::Internal,
            Self::Merge(_) => Side::Backend,
            Self::MaxClients | Self::NoBackendState(_) => Side::Internal,
            _ => Side::Client,
        }
    }

    /// Whether the same request may succeed if sent again later (client errors never do).
    pub fn retryable(&self) -> bool {
        match self {
            Self::BackendUnavailable { why, .. } => why.retryable(),
            // A cluster map being refreshed, a listener at its client limit.
            Self::NoServerForKey | Self::NoServer | Self::MaxClients => true,
            Self::SlotMigrating { .. } | Self::KeyMoveFailed(_) => true,
            _ => false,
        }
    }

    /// The error code clients see first (Redis's own where Redis has the same error).
    pub fn code(&self) -> &'static str {
        match self {
            Self::NoAuth | Self::HelloNoAuth => "NOAUTH",
            Self::WrongPass => "WRONGPASS",
            Self::CommandDenied(_)
            | Self::AdminRefused { .. }
            | Self::KeyDenied
            | Self::CallerRefused { .. } => "NOPERM",
            Self::CrossSlot => "CROSSSLOT",
            Self::SlotMigrating { .. } => "TRYAGAIN",
            Self::ExecAbort => "EXECABORT",
            Self::UnsupportedProtocol => "NOPROTO",
            _ => "ERR",
        }
    }

    /// Appends the RESP error reply: `-<code> <message>\r\n`, CR and LF in the message made
    /// spaces so that it stays one line.
    pub fn write_reply(&self, out: &mut Vec<u8>) {
        use std::io::Write;
        out.push(b'-');
        out.extend_from_slice(self.code().as_bytes());
        out.push(b' ');
        let message = out.len();
        // ok: writing to a Vec cannot fail
        let _ = write!(out, "{self}");
        if let Some(m) = out.get_mut(message..) {
            for b in m.iter_mut().filter(|b| matches!(b, b'\r' | b'\n')) {
                *b = b' ';
            }
        }
        out.extend_from_slice(b"\r\n");
    }

    /// The RESP error reply.
    pub fn reply(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        self.write_reply(&mut out);
        out
    }

    /// The error reply to a malformed or oversized request; before authentication, a cap that
    /// only applies then is named as Redis names it.
    pub fn protocol(e: codec::resp::RespError, preauth: bool) -> Self {
        use codec::resp::RespError;
        match e {
            RespError::InvalidBulkLength if preauth => Self::PreauthBulkLength,
            RespError::InvalidMultibulkLength if preauth => Self::PreauthMultibulkLength,
            e => Self::Protocol(e),
        }
    }

    /// A command Redis does not know, with the start of its arguments quoted as Redis does.
    pub fn unknown_command<'a>(name: &[u8], args: impl Iterator<Item = &'a [u8]>) -> Self {
        let mut quoted = String::new();
        for a in args.take(16) {
            use fmt::Write;
            // ok: writing to a String cannot fail
            let _ = write!(
                quoted,
                "'{}' ",
                String::from_utf8_lossy(a.get(..a.len().min(128)).unwrap_or_default())
            );
        }
        Self::UnknownCommand {
            name: String::from_utf8_lossy(name).into_owned(),
            args: quoted,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(e: &Error) -> String {
        String::from_utf8(e.reply()).expect("utf-8")
    }

    #[test]
    fn replies_carry_redis_codes_and_wording() {
        assert_eq!(wire(&Error::NoAuth), "-NOAUTH Authentication required.\r\n");
        assert_eq!(
            wire(&Error::KeyDenied),
            "-NOPERM this user has no permissions to access one of the keys used as arguments\r\n"
        );
        assert_eq!(
            wire(&Error::ExecAbort),
            "-EXECABORT Transaction discarded because of previous errors.\r\n"
        );
        assert_eq!(
            wire(&Error::CrossSlot),
            "-CROSSSLOT Keys in request don't hash to the same slot\r\n"
        );
        assert_eq!(
            wire(&Error::WrongArity("get")),
            "-ERR wrong number of arguments for 'get' command\r\n"
        );
        assert_eq!(
            wire(&Error::unknown_command(
                b"foo",
                [&b"a"[..], b"b"].into_iter()
            )),
            "-ERR unknown command 'foo', with args beginning with: 'a' 'b' \r\n"
        );
        assert_eq!(
            wire(&Error::Merge(MergeError::ExpectedIntegers)),
            "-ERR proxy expected integer replies from the shards\r\n"
        );
    }

    #[test]
    fn backend_errors_name_the_server_and_stay_on_one_line() {
        let e = Error::BackendUnavailable {
            server: "r1".into(),
            address: "127.0.0.1:7000".into(),
            why: BackendFailure::Handshake("ERR bad\r\npassword".into()),
        };
        assert_eq!(
            wire(&e),
            "-ERR backend r1 (127.0.0.1:7000) unavailable: handshake failed: ERR bad  password\r\n"
        );
        assert_eq!(e.side(), Side::Backend);
        assert!(e.retryable());
        let refused = Error::BackendUnavailable {
            server: "r1".into(),
            address: "a:1".into(),
            why: BackendFailure::Offline,
        };
        assert!(!refused.retryable());
        assert!(!Error::Syntax.retryable());
        assert_eq!(Error::Syntax.side(), Side::Client);
    }

    #[test]
    fn preauth_caps_are_named_as_redis_names_them() {
        use codec::resp::RespError;
        assert_eq!(
            wire(&Error::protocol(RespError::InvalidBulkLength, true)),
            "-ERR Protocol error: unauthenticated bulk length\r\n"
        );
        assert_eq!(
            wire(&Error::protocol(RespError::InvalidBulkLength, false)),
            "-ERR Protocol error: invalid bulk length\r\n"
        );
    }
}
