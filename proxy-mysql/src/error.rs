//! The proxy's error type and its mapping to MySQL ERR packets (code, SQLSTATE, message).

use codec::mysql::{ErrPacket, MysqlError};

use crate::conn::ConnError;

/// The server's code for `Unknown system variable` (a server without MariaDB GTIDs answers
/// `@@gtid_slave_pos` / `@@last_gtid` with it).
pub const ER_UNKNOWN_SYSTEM_VARIABLE: u16 = 1193;

/// Which side of the proxy an error comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client: its packets, its socket, or a request it is not allowed to make.
    Client,
    /// A backend server could not be used or failed while serving the request.
    Backend,
    /// The proxy itself (its limits, configuration or state) cannot serve the request.
    Internal,
}

/// An error the proxy answers a client with (or closes the session on); the variant is its kind.
/// [`ProxyError::side`] says who failed, [`ProxyError::retryable`] whether the request may succeed
/// if sent again (the read retry loops read nothing else), and [`ProxyError::to_err_packet`] is the
/// one place that maps an error to the client's ERR packet.
///
/// Transport failures ([`ConnError`], the framing layer's) become one of these as they leave the
/// connection, classified by the side of the socket: [`ProxyError::client`],
/// [`ProxyError::lost`].
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
    /// A backend answered a statement the proxy sent on its own behalf (a health check, a
    /// `SELECT @@last_gtid`, a schema check) with this ERR; the connection is still usable.
    #[error("{}", String::from_utf8_lossy(&.0.message))]
    BackendRefused(ErrPacket),
    /// The result exceeded `max_result_bytes`; `next_seq` continues the partial result for the ERR.
    #[error("result larger than {limit} bytes")]
    ResultTooLarge {
        /// The configured limit.
        limit: u64,
        /// Sequence id for the ERR packet.
        next_seq: u8,
    },
    /// The rows a sharded plan buffers exceeded its memory budget (bytes).
    #[error("shard results larger than the memory budget of {0} bytes")]
    RowBudget(u64),
    /// The statement ran longer than the configured statement timeout.
    #[error("statement timeout")]
    Timeout,
    /// The request is not allowed or cannot be served as asked (ACL, hints, rules, a schema or
    /// state the server refuses): nothing was sent, and sending it again would be refused again.
    #[error("{}", String::from_utf8_lossy(&.0.message))]
    Refused(ErrPacket),
    /// No server can take the request now (its circuit is open, its pool is full, the group has
    /// no usable server of the kind needed): nothing was sent. Not retried within the request:
    /// the condition lasts longer than a client waits.
    #[error("{}", String::from_utf8_lossy(&.0.message))]
    Unavailable(ErrPacket),
    /// The proxy's own state or configuration cannot serve the request (an inconsistency
    /// reported instead of a panic, a group the config lacks).
    #[error("{}", String::from_utf8_lossy(&.0.message))]
    Internal(ErrPacket),
}

impl ProxyError {
    /// A failure of the client's socket or framing (while reading its request or writing it a
    /// reply).
    pub fn client(e: ConnError) -> Self {
        match e {
            ConnError::Io(e) => ProxyError::ClientIo(e),
            e @ (ConnError::Protocol(_) | ConnError::BudgetExhausted { .. }) => {
                ProxyError::ClientIo(std::io::Error::other(e.to_string()))
            }
        }
    }

    /// The connection to backend `server` failed while a statement was in flight.
    pub fn lost(server: &str, e: impl std::fmt::Display) -> Self {
        ProxyError::BackendLost {
            server: server.to_string(),
            reason: e.to_string(),
        }
    }

    /// The error as a sharded session's client reads it: a lost connection is named after the
    /// shard (the client knows the shards, not their servers); other errors are unchanged.
    pub fn on_shard(self, shard: &str) -> Self {
        match self {
            ProxyError::BackendLost { reason, .. } => ProxyError::BackendLost {
                server: shard.to_string(),
                reason,
            },
            e => e,
        }
    }

    /// Why, without the server's name (as [`ProxyError::into_reason`], borrowing).
    pub fn reason(&self) -> String {
        match self {
            ProxyError::BackendLost { reason, .. } | ProxyError::BackendConnect { reason, .. } => {
                reason.clone()
            }
            e => e.to_string(),
        }
    }

    /// Whether this is the backend's ERR `code` (e.g. 1193, unknown system variable).
    pub fn is_backend_code(&self, code: u16) -> bool {
        matches!(self, ProxyError::BackendRefused(p) if p.code == code)
    }

    /// Why, without the server's name: a backend failure's reason, else the error's text (for
    /// reports that name the server or shard themselves).
    pub fn into_reason(self) -> String {
        match self {
            ProxyError::BackendLost { reason, .. } | ProxyError::BackendConnect { reason, .. } => {
                reason
            }
            e => e.to_string(),
        }
    }

    /// Which side failed.
    pub fn side(&self) -> Side {
        match self {
            ProxyError::ClientProtocol(_) | ProxyError::ClientIo(_) => Side::Client,
            ProxyError::BackendConnect { .. }
            | ProxyError::BackendLost { .. }
            | ProxyError::Timeout => Side::Backend,
            ProxyError::Unavailable(_) | ProxyError::BackendRefused(_) => Side::Backend,
            ProxyError::ResultTooLarge { .. }
            | ProxyError::RowBudget(_)
            | ProxyError::Internal(_) => Side::Internal,
            ProxyError::Refused(_) => Side::Client,
        }
    }

    /// Whether the same request may succeed if sent again, elsewhere or later: a backend that
    /// could not be reached, whose connection broke, or that did not answer in time. The read
    /// retry loops run a read again on another replica only for these (and only while nothing of
    /// its reply reached the client); refusals and limits never pass.
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            ProxyError::BackendConnect { .. }
                | ProxyError::BackendLost { .. }
                | ProxyError::Timeout
        )
    }

    /// Whether the error counts towards the server's ejection (circuit breaker): its connection
    /// failed. A timeout is the statement's (the server is alive), a refusal the proxy's own.
    pub fn is_server_failure(&self) -> bool {
        matches!(
            self,
            ProxyError::BackendConnect { .. } | ProxyError::BackendLost { .. }
        )
    }

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
            ProxyError::RowBudget(b) => {
                errs::plan(&router::sql::plan::ShardError::MemoryBudget(*b))
            }
            ProxyError::Timeout => ErrPacket::new(
                1969,
                "70100",
                "Query execution was interrupted (max_statement_time exceeded)",
            ),
            ProxyError::Refused(p)
            | ProxyError::Unavailable(p)
            | ProxyError::Internal(p)
            | ProxyError::BackendRefused(p) => p.clone(),
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

    /// 1045: the user logged in, but a governance caller list refuses it (the caller of a
    /// proxy is its user).
    pub fn caller_refused(user: &str, host: &str, rule: &str) -> ErrPacket {
        ErrPacket::new(
            1045,
            "28000",
            format!("Access denied for user '{user}'@'{host}': caller refused {rule}"),
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

    /// 1053: the proxy is draining (shutdown or binary upgrade); sent to idle clients before the
    /// close, as the server does to its clients when it shuts down.
    pub fn server_shutdown() -> ErrPacket {
        ErrPacket::new(1053, "08S01", "Server shutdown in progress")
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

    /// A sharded statement the planner refuses or a merge that fails: the planner's code and
    /// SQLSTATE, its message after `furrow: `.
    pub fn plan(e: &router::sql::plan::ShardError) -> ErrPacket {
        let (code, state) = e.mysql_code();
        ErrPacket::new(code, state, format!("furrow: {e}"))
    }

    /// 1835: a packet that does not parse as the command it says it is (`what`: the detail,
    /// or empty).
    pub fn malformed(what: &str) -> ErrPacket {
        let msg = if what.is_empty() {
            "Malformed communication packet".to_string()
        } else {
            format!("Malformed communication packet: {what}")
        };
        ErrPacket::new(1835, "08S01", msg)
    }

    /// 1156: a login packet with the wrong sequence id.
    pub fn out_of_order() -> ErrPacket {
        ErrPacket::new(1156, "08S01", "Got packets out of order")
    }

    /// 1043: a second SSL request in one login.
    pub fn second_ssl_request() -> ErrPacket {
        ErrPacket::new(1043, "08S01", "Bad handshake: a second SSL request")
    }

    /// 1105: an SSL request on a listener without TLS.
    pub fn tls_not_supported() -> ErrPacket {
        ErrPacket::new(
            1105,
            "HY000",
            "furrow: TLS is not supported on this listener",
        )
    }

    /// 1105: the OS random generator failed, so there is no login nonce.
    pub fn no_nonce() -> ErrPacket {
        ErrPacket::new(
            1105,
            "HY000",
            "furrow: cannot draw a login nonce (OS random generator unavailable)",
        )
    }

    /// 1064: a multi-statement from a client that did not enable them.
    pub fn multi_statements_off() -> ErrPacket {
        ErrPacket::new(
            1064,
            "42000",
            "You have an error in your SQL syntax; multi-statements are not enabled for this \
             connection (CLIENT_MULTI_STATEMENTS)",
        )
    }

    /// 1047: COM_SET_OPTION with an option MySQL does not have.
    pub fn unknown_option() -> ErrPacket {
        ErrPacket::new(1047, "08S01", "Unknown command")
    }

    /// 1421: COM_STMT_FETCH without an open cursor.
    pub fn no_open_cursor() -> ErrPacket {
        ErrPacket::new(1421, "HY000", "The statement has no open cursor")
    }

    /// 1142: a statement the group's rules refuse to `user` (`why`: which rule; `message`: the
    /// rule's own text).
    pub fn denied(user: &str, why: &str, message: Option<&str>) -> ErrPacket {
        let extra = message.map(|m| format!(": {m}")).unwrap_or_default();
        ErrPacket::new(
            1142,
            "42000",
            format!("furrow: statement refused for user '{user}' ({why}){extra}"),
        )
    }

    /// 1226: a `limit` rule's budget is spent (MariaDB's wording for a user resource limit).
    pub fn limited(user: &str, resource: &str, value: u64, message: Option<&str>) -> ErrPacket {
        let extra = message.map(|m| format!(" ({m})")).unwrap_or_default();
        ErrPacket::new(
            1226,
            "42000",
            format!(
                "User '{user}' has exceeded the '{resource}' resource (current value: {value}){extra}"
            ),
        )
    }

    /// 1142: the schemas a statement uses cannot be told (so `outside_schemas` cannot be checked).
    pub fn schemas_unchecked(user: &str, why: &str) -> ErrPacket {
        ErrPacket::new(
            1142,
            "42000",
            format!(
                "furrow: statement refused for user '{user}': the schemas it uses cannot be \
                 checked ({why}); qualify names or simplify the statement"
            ),
        )
    }

    /// 1235: a statement sharded listeners refuse.
    pub fn unsupported_sharded(what: &str) -> ErrPacket {
        ErrPacket::new(
            1235,
            "42000",
            format!("furrow: not supported on sharded tables: {what}"),
        )
    }

    /// 1235: a session that negotiated cached metadata on a listener that became sharded since
    /// (sharded replies are built by the proxy in the classic format).
    pub fn cached_metadata_on_sharded() -> ErrPacket {
        ErrPacket::new(
            1235,
            "42000",
            "furrow: this connection negotiated MARIADB_CLIENT_CACHE_METADATA before its listener              became sharded; reconnect",
        )
    }

    /// 1235: a statement refused on a table being resharded (`why` says what and how to go on).
    pub fn resharding(table: &str, why: &str) -> ErrPacket {
        resharding_with(table, 1235, why)
    }

    /// A dual write's error with the code of the layout's own error (`code`).
    pub fn resharding_with(table: &str, code: u16, why: &str) -> ErrPacket {
        ErrPacket::new(
            code,
            if code == 1235 { "42000" } else { "HY000" },
            format!("furrow: table `{table}` is being resharded: {why}"),
        )
    }

    /// 1105: the listener's sharding rules `name` do not compile (`e`: the compiler's message).
    pub fn rules_broken(name: &str, e: &dyn std::fmt::Display) -> ErrPacket {
        ErrPacket::new(
            1105,
            "HY000",
            format!("furrow: sharding rules `{name}`: {e}"),
        )
    }

    /// 1049: a database a sharded listener does not serve.
    pub fn unknown_database(db: &str) -> ErrPacket {
        ErrPacket::new(1049, "42000", format!("Unknown database '{db}'"))
    }

    /// 1046: no database selected.
    pub fn no_database() -> ErrPacket {
        ErrPacket::new(1046, "3D000", "No database selected")
    }

    /// 1105: a `furrow:shard=NAME` hint naming no shard of the rules.
    pub fn unknown_shard(name: &str, known: &[&str]) -> ErrPacket {
        ErrPacket::new(
            1105,
            "HY000",
            format!(
                "furrow: unknown shard `{name}` in hint (shards: {})",
                known.join(", ")
            ),
        )
    }

    /// 1390: more placeholders than a prepared statement may have.
    pub fn too_many_placeholders() -> ErrPacket {
        ErrPacket::new(
            1390,
            "HY000",
            "Prepared statement contains too many placeholders",
        )
    }

    /// 1461: the session's prepared statements are at their limit.
    pub fn too_many_statements() -> ErrPacket {
        ErrPacket::new(
            1461,
            "42000",
            "Can't create more than max_prepared_stmt_count statements",
        )
    }

    /// 1210: a COM_STMT_EXECUTE whose parameters do not decode.
    pub fn bad_execute_arguments(e: &dyn std::fmt::Display) -> ErrPacket {
        ErrPacket::new(
            1210,
            "HY000",
            format!("Incorrect arguments to mysqld_stmt_execute: {e}"),
        )
    }

    /// 1180: a cross-shard COMMIT that failed on `shard` after others committed (`report`: each
    /// shard's outcome).
    pub fn partial_commit(shard: &str, report: &str) -> ErrPacket {
        ErrPacket::new(
            1180,
            "HY000",
            format!(
                "furrow: commit failed on shard {shard}; the transaction is only partly \
                 committed:{report}"
            ),
        )
    }

    /// 1105: an internal inconsistency, reported instead of panicking.
    pub fn internal(what: &str) -> ErrPacket {
        ErrPacket::new(1105, "HY000", format!("furrow internal error: {what}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_decisions_read_the_classification() {
        let lost = ProxyError::lost("r1", "broken pipe");
        assert_eq!(lost.side(), Side::Backend);
        assert!(lost.retryable() && lost.is_server_failure());
        assert!(ProxyError::Timeout.retryable());
        assert!(!ProxyError::Timeout.is_server_failure());
        let full = ProxyError::Unavailable(errs::pool_exhausted("r1"));
        assert_eq!(full.side(), Side::Backend);
        assert!(!full.retryable() && !full.is_server_failure());
        let refused = ProxyError::Refused(errs::read_only("u"));
        assert_eq!(refused.side(), Side::Client);
        assert!(!refused.retryable());
        let client = ProxyError::client(ConnError::Io(std::io::ErrorKind::BrokenPipe.into()));
        assert_eq!(client.side(), Side::Client);
        assert!(!client.retryable() && !client.is_server_failure());
        let refused = ProxyError::BackendRefused(ErrPacket::new(1193, "HY000", "Unknown"));
        assert_eq!(refused.side(), Side::Backend);
        assert!(refused.is_backend_code(1193) && !refused.is_backend_code(1046));
        assert!(!refused.retryable() && !refused.is_server_failure());
        let big = ProxyError::ResultTooLarge {
            limit: 10,
            next_seq: 7,
        };
        assert_eq!(big.side(), Side::Internal);
        assert!(!big.retryable());
    }

    #[test]
    fn wire_errors_keep_the_server_codes() {
        let p = ProxyError::lost("r1", "broken pipe").to_err_packet();
        assert_eq!((p.code, p.sql_state), (1158, Some(*b"08S01")));
        assert!(String::from_utf8_lossy(&p.message).contains("'r1'"));
        let p = ProxyError::Timeout.to_err_packet();
        assert_eq!(p.code, 1969);
        let p = ProxyError::RowBudget(5).to_err_packet();
        assert_eq!(
            p.code,
            router::sql::plan::ShardError::MemoryBudget(5)
                .mysql_code()
                .0
        );
    }
}
