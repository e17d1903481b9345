//! The proxy's error type and its mapping to MySQL ERR packets (code, SQLSTATE, message).

use codec::mysql::{ErrPacket, MysqlError};

/// Everything that can go wrong in a session, classified by side.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The client sent something that is not valid MySQL protocol; the connection is closed.
    #[error("malformed packet from client: {0}")]
    ClientProtocol(MysqlError),
    /// The client went away or its socket failed.
    #[error("client i/o: {0}")]
    ClientIo(std::io::Error),
    /// A backend could not be reached or logged in to (nothing was sent; retryable).
    #[error("cannot connect to backend {server} ({address}): {reason}")]
    BackendConnect {
        /// Server name.
        server: String,
        /// Address.
        address: String,
        /// Why.
        reason: String,
    },
    /// A backend connection failed while a statement was in flight (it may have been applied).
    #[error("lost connection to backend {server} during the statement: {reason}")]
    BackendLost {
        /// Server name.
        server: String,
        /// Why.
        reason: String,
    },
    /// The result exceeded `max_result_bytes`; `next_seq` continues the partial result for the ERR.
    #[error("result larger than {limit} bytes")]
    ResultTooLarge {
        /// The configured limit.
        limit: u64,
        /// Sequence id for the ERR packet.
        next_seq: u8,
    },
    /// The statement ran longer than the configured statement timeout.
    #[error("statement timeout")]
    Timeout,
    /// A refusal with a ready ERR packet (ACL, limits, rules, unsupported features).
    #[error("{}", String::from_utf8_lossy(&.0.message))]
    Refused(ErrPacket),
}

impl ProxyError {
    /// The ERR packet a client sees for this error.
    pub fn to_err_packet(&self) -> ErrPacket {
        match self {
            ProxyError::ClientProtocol(e) => match e {
                MysqlError::PacketTooLarge { .. } => ErrPacket::new(
                    1153,
                    "08S01",
                    "Got a packet bigger than 'max_allowed_packet' bytes",
                ),
                _ => ErrPacket::new(
                    1835,
                    "08S01",
                    format!("Malformed communication packet: {e}"),
                ),
            },
            ProxyError::ClientIo(e) => {
                ErrPacket::new(1158, "08S01", format!("client i/o error: {e}"))
            }
            ProxyError::BackendConnect {
                server,
                address,
                reason,
            } => ErrPacket::new(
                1105,
                "HY000",
                format!("furrow: cannot connect to backend '{server}' ({address}): {reason}"),
            ),
            ProxyError::BackendLost { server, reason } => ErrPacket::new(
                1158,
                "08S01",
                format!(
                    "furrow: lost connection to backend '{server}' during the statement ({reason}); \
                     it may or may not have been applied"
                ),
            ),
            ProxyError::ResultTooLarge { limit, .. } => ErrPacket::new(
                1105,
                "HY000",
                format!(
                    "furrow: result larger than max_result_bytes ({limit} bytes); the statement was aborted"
                ),
            ),
            ProxyError::Timeout => ErrPacket::new(
                1969,
                "70100",
                "Query execution was interrupted (max_statement_time exceeded)",
            ),
            ProxyError::Refused(p) => p.clone(),
        }
    }
}

/// Builders for the ERR packets MySQL/MariaDB send in the same situations.
pub mod errs {
    use codec::mysql::ErrPacket;

    /// 1045: wrong user or password.
    pub fn access_denied(user: &str, host: &str, password: bool) -> ErrPacket {
        ErrPacket::new(
            1045,
            "28000",
            format!(
                "Access denied for user '{user}'@'{host}' (using password: {})",
                if password { "YES" } else { "NO" }
            ),
        )
    }

    /// 1130: source host not allowed.
    pub fn host_not_allowed(host: &str) -> ErrPacket {
        ErrPacket::new(
            1130,
            "HY000",
            format!("Host '{host}' is not allowed to connect to this MariaDB server"),
        )
    }

    /// 1044: schema not allowed for the user.
    pub fn db_access_denied(user: &str, host: &str, db: &str) -> ErrPacket {
        ErrPacket::new(
            1044,
            "42000",
            format!("Access denied for user '{user}'@'{host}' to database '{db}'"),
        )
    }

    /// 1040: connection limit reached.
    pub fn too_many_connections() -> ErrPacket {
        ErrPacket::new(1040, "08004", "Too many connections")
    }

    /// 1047: unknown or unsupported command.
    pub fn unknown_command(code: u8) -> ErrPacket {
        ErrPacket::new(1047, "08S01", format!("Unknown command 0x{code:02x}"))
    }

    /// 1148: LOAD DATA LOCAL INFILE is refused.
    pub fn local_infile() -> ErrPacket {
        ErrPacket::new(
            1148,
            "42000",
            "The used command is not allowed with this MariaDB version \
             (furrow: LOAD DATA LOCAL INFILE is not supported through the proxy)",
        )
    }

    /// 1290: writes refused for a replica_only user.
    pub fn read_only(user: &str) -> ErrPacket {
        ErrPacket::new(
            1290,
            "HY000",
            format!(
                "The MariaDB server is running with the --read-only option so it cannot execute this \
                 statement (furrow: user '{user}' has read_policy = replica_only)"
            ),
        )
    }

    /// 1227: a `furrow:backend=NAME` hint names the primary for a `replica_only` user.
    pub fn hint_primary_denied(user: &str, server: &str) -> ErrPacket {
        ErrPacket::new(
            1227,
            "42000",
            format!(
                "Access denied; furrow: user '{user}' has read_policy = replica_only and may not \
                 use the primary '{server}' named in the hint"
            ),
        )
    }

    /// 1290: a `furrow:backend=NAME` hint names a replica for a statement that may write.
    pub fn hint_write_to_replica(server: &str) -> ErrPacket {
        ErrPacket::new(
            1290,
            "HY000",
            format!(
                "The MariaDB server is running with the --read-only option so it cannot execute this \
                 statement (furrow: '{server}' named in the hint is a replica; statements that may \
                 write run on the primary only)"
            ),
        )
    }

    /// 1041: the listener's budget for buffered client packets is in use.
    pub fn out_of_memory(limit: usize) -> ErrPacket {
        ErrPacket::new(
            1041,
            "HY000",
            format!(
                "Out of memory; furrow: the clients of this listener already hold the \
                 client_buffer_budget ({limit} bytes) in packets being received; retry later"
            ),
        )
    }

    /// 1290: a statement that may write, in a session whose transaction a hint put on a replica.
    pub fn write_on_pinned_replica(server: &str) -> ErrPacket {
        ErrPacket::new(
            1290,
            "HY000",
            format!(
                "The MariaDB server is running with the --read-only option so it cannot execute this \
                 statement (furrow: this session's transaction is on the replica '{server}'; \
                 statements that may write run on the primary only: end the transaction first)"
            ),
        )
    }

    /// 1243: unknown prepared statement handler.
    pub fn unknown_stmt(id: u32, what: &str) -> ErrPacket {
        ErrPacket::new(
            1243,
            "HY000",
            format!("Unknown prepared statement handler ({id}) given to {what}"),
        )
    }

    /// 1105: pool exhausted.
    pub fn pool_exhausted(server: &str) -> ErrPacket {
        ErrPacket::new(
            1040,
            "08004",
            format!("Too many connections (furrow: backend pool for '{server}' is exhausted)"),
        )
    }

    /// 1105: the group has no such server (hint `furrow:backend=NAME`).
    pub fn unknown_backend(name: &str) -> ErrPacket {
        ErrPacket::new(
            1105,
            "HY000",
            format!("furrow: unknown backend '{name}' in hint"),
        )
    }

    /// 1105: no usable server for the statement.
    pub fn no_backend(group: &str, what: &str) -> ErrPacket {
        ErrPacket::new(
            1105,
            "HY000",
            format!("furrow: no usable {what} in group '{group}'"),
        )
    }

    /// 1105: a server's circuit is open (ejected after errors, or taken offline by an admin),
    /// with the reason of its last failure when known.
    pub fn circuit_open(server: &str, st: &runtime::BackendState) -> ErrPacket {
        let state = st.state_word();
        let why = match st.last_error() {
            Some(e) if state == "ejected" => format!("; last error: {e}"),
            _ => String::new(),
        };
        ErrPacket::new(
            1105,
            "HY000",
            format!(
                "furrow: backend '{server}' is {state} (circuit open after errors or admin \
                 offline{why}); the statement was not sent"
            ),
        )
    }

    /// 1129: too many failed logins from this address (`max_login_failures`).
    pub fn host_blocked(host: &str, left: std::time::Duration) -> ErrPacket {
        ErrPacket::new(
            1129,
            "HY000",
            format!(
                "Host '{host}' is blocked because of many failed logins; it is unblocked in {} s",
                left.as_secs().max(1)
            ),
        )
    }

    /// 1105: an internal inconsistency, reported instead of panicking.
    pub fn internal(what: &str) -> ErrPacket {
        ErrPacket::new(1105, "HY000", format!("furrow internal error: {what}"))
    }
}
