//! Protocol constants: capability flags, status flags, command bytes, column types and flags.

/// Capability flags (`CLIENT_*`), exchanged in the handshake.
pub mod capability {
    /// Old long password; MariaDB calls it `CLIENT_MYSQL` (unset by MariaDB servers to signal
    /// that the handshake filler carries extended capabilities).
    pub const CLIENT_LONG_PASSWORD: u32 = 1;
    /// Send found rows instead of affected rows.
    pub const CLIENT_FOUND_ROWS: u32 = 1 << 1;
    /// Get all column flags.
    pub const CLIENT_LONG_FLAG: u32 = 1 << 2;
    /// A database name may be given in the handshake response.
    pub const CLIENT_CONNECT_WITH_DB: u32 = 1 << 3;
    /// Do not allow `database.table.column`.
    pub const CLIENT_NO_SCHEMA: u32 = 1 << 4;
    /// Compression protocol.
    pub const CLIENT_COMPRESS: u32 = 1 << 5;
    /// ODBC client.
    pub const CLIENT_ODBC: u32 = 1 << 6;
    /// `LOAD DATA LOCAL` allowed.
    pub const CLIENT_LOCAL_FILES: u32 = 1 << 7;
    /// Ignore spaces before `(`.
    pub const CLIENT_IGNORE_SPACE: u32 = 1 << 8;
    /// The 4.1 protocol.
    pub const CLIENT_PROTOCOL_41: u32 = 1 << 9;
    /// Interactive client (interactive_timeout).
    pub const CLIENT_INTERACTIVE: u32 = 1 << 10;
    /// Switch to TLS after the SSLRequest.
    pub const CLIENT_SSL: u32 = 1 << 11;
    /// Ignore SIGPIPE (client-side only).
    pub const CLIENT_IGNORE_SIGPIPE: u32 = 1 << 12;
    /// Client knows about transactions (status flags in OK).
    pub const CLIENT_TRANSACTIONS: u32 = 1 << 13;
    /// Old flag for the 4.1 protocol.
    pub const CLIENT_RESERVED: u32 = 1 << 14;
    /// 4.1 authentication (length-prefixed auth response).
    pub const CLIENT_SECURE_CONNECTION: u32 = 1 << 15;
    /// Multiple statements per COM_QUERY.
    pub const CLIENT_MULTI_STATEMENTS: u32 = 1 << 16;
    /// Multiple result sets.
    pub const CLIENT_MULTI_RESULTS: u32 = 1 << 17;
    /// Multiple result sets from prepared statements.
    pub const CLIENT_PS_MULTI_RESULTS: u32 = 1 << 18;
    /// Authentication plugins.
    pub const CLIENT_PLUGIN_AUTH: u32 = 1 << 19;
    /// Connection attributes in the handshake response.
    pub const CLIENT_CONNECT_ATTRS: u32 = 1 << 20;
    /// Length-encoded auth response in the handshake response.
    pub const CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA: u32 = 1 << 21;
    /// Client can handle expired passwords.
    pub const CLIENT_CAN_HANDLE_EXPIRED_PASSWORDS: u32 = 1 << 22;
    /// Session state tracking in OK packets.
    pub const CLIENT_SESSION_TRACK: u32 = 1 << 23;
    /// OK (0xFE header) replaces EOF after result sets.
    pub const CLIENT_DEPRECATE_EOF: u32 = 1 << 24;
    /// Optional result set metadata (MySQL 8).
    pub const CLIENT_OPTIONAL_RESULTSET_METADATA: u32 = 1 << 25;
    /// zstd compression (MySQL 8).
    pub const CLIENT_ZSTD_COMPRESSION_ALGORITHM: u32 = 1 << 26;
    /// Query attributes (MySQL 8).
    pub const CLIENT_QUERY_ATTRIBUTES: u32 = 1 << 27;
    /// Verify server certificate (client-side only).
    pub const CLIENT_SSL_VERIFY_SERVER_CERT: u32 = 1 << 30;
    /// Remember options (client-side only).
    pub const CLIENT_REMEMBER_OPTIONS: u32 = 1 << 31;

    /// MariaDB extended capability: progress reports.
    pub const MARIADB_CLIENT_PROGRESS: u32 = 1;
    /// MariaDB extended capability: COM_MULTI.
    pub const MARIADB_CLIENT_COM_MULTI: u32 = 1 << 1;
    /// MariaDB extended capability: bulk COM_STMT_EXECUTE.
    pub const MARIADB_CLIENT_STMT_BULK_OPERATIONS: u32 = 1 << 2;
    /// MariaDB extended capability: extended column metadata.
    pub const MARIADB_CLIENT_EXTENDED_METADATA: u32 = 1 << 3;
    /// MariaDB extended capability: skip result set metadata on execute.
    pub const MARIADB_CLIENT_CACHE_METADATA: u32 = 1 << 4;

    /// What Furrow's client side asks a backend for by default.
    pub const DEFAULT_CLIENT: u32 = CLIENT_LONG_PASSWORD
        | CLIENT_LONG_FLAG
        | CLIENT_PROTOCOL_41
        | CLIENT_TRANSACTIONS
        | CLIENT_SECURE_CONNECTION
        | CLIENT_MULTI_STATEMENTS
        | CLIENT_MULTI_RESULTS
        | CLIENT_PS_MULTI_RESULTS
        | CLIENT_PLUGIN_AUTH
        | CLIENT_CONNECT_ATTRS
        | CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
        | CLIENT_SESSION_TRACK;

    /// What the proxy offers its clients. No CLIENT_DEPRECATE_EOF, CLIENT_SESSION_TRACK or
    /// CLIENT_LOCAL_FILES: replies are forwarded verbatim from backends, which are asked for
    /// [`PROXY_BACKEND`], so clients must expect exactly what backends send under it.
    pub const PROXY_SERVER: u32 = CLIENT_LONG_PASSWORD
        | CLIENT_LONG_FLAG
        | CLIENT_CONNECT_WITH_DB
        | CLIENT_PROTOCOL_41
        | CLIENT_TRANSACTIONS
        | CLIENT_SECURE_CONNECTION
        | CLIENT_MULTI_STATEMENTS
        | CLIENT_MULTI_RESULTS
        | CLIENT_PS_MULTI_RESULTS
        | CLIENT_PLUGIN_AUTH
        | CLIENT_CONNECT_ATTRS
        | CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA;

    /// What the proxy asks of its backends: what it offers clients less the login-only flags
    /// (the schema is selected with COM_INIT_DB, no connection attributes are sent).
    pub const PROXY_BACKEND: u32 = PROXY_SERVER & !(CLIENT_CONNECT_WITH_DB | CLIENT_CONNECT_ATTRS);

    // Forwarding verbatim needs both sides to agree on the reply format.
    const _: () = assert!(
        PROXY_SERVER & (CLIENT_DEPRECATE_EOF | CLIENT_SESSION_TRACK | CLIENT_LOCAL_FILES) == 0
    );
    const _: () = assert!(
        PROXY_BACKEND == PROXY_BACKEND & PROXY_SERVER && PROXY_BACKEND & CLIENT_PROTOCOL_41 != 0
    );
}

/// Server status flags (`SERVER_*`), carried by OK and EOF packets.
pub mod status {
    /// A transaction is open.
    pub const SERVER_STATUS_IN_TRANS: u16 = 1;
    /// Autocommit is on.
    pub const SERVER_STATUS_AUTOCOMMIT: u16 = 1 << 1;
    /// More result sets follow.
    pub const SERVER_MORE_RESULTS_EXISTS: u16 = 1 << 3;
    /// No good index was used.
    pub const SERVER_STATUS_NO_GOOD_INDEX_USED: u16 = 1 << 4;
    /// No index was used.
    pub const SERVER_STATUS_NO_INDEX_USED: u16 = 1 << 5;
    /// A read-only cursor is open (COM_STMT_FETCH).
    pub const SERVER_STATUS_CURSOR_EXISTS: u16 = 1 << 6;
    /// The last row of a cursor was sent.
    pub const SERVER_STATUS_LAST_ROW_SENT: u16 = 1 << 7;
    /// A database was dropped.
    pub const SERVER_STATUS_DB_DROPPED: u16 = 1 << 8;
    /// `NO_BACKSLASH_ESCAPES` is on.
    pub const SERVER_STATUS_NO_BACKSLASH_ESCAPES: u16 = 1 << 9;
    /// Metadata changed (re-prepare).
    pub const SERVER_STATUS_METADATA_CHANGED: u16 = 1 << 10;
    /// The query was slow.
    pub const SERVER_QUERY_WAS_SLOW: u16 = 1 << 11;
    /// Output parameters of a procedure.
    pub const SERVER_PS_OUT_PARAMS: u16 = 1 << 12;
    /// In a read-only transaction.
    pub const SERVER_STATUS_IN_TRANS_READONLY: u16 = 1 << 13;
    /// Session state changed; the OK packet carries session-state info.
    pub const SERVER_SESSION_STATE_CHANGED: u16 = 1 << 14;
}

/// Command bytes (`COM_*`), the first byte of a command-phase client payload.
pub mod com {
    /// COM_SLEEP (internal).
    pub const SLEEP: u8 = 0x00;
    /// COM_QUIT.
    pub const QUIT: u8 = 0x01;
    /// COM_INIT_DB.
    pub const INIT_DB: u8 = 0x02;
    /// COM_QUERY.
    pub const QUERY: u8 = 0x03;
    /// COM_FIELD_LIST.
    pub const FIELD_LIST: u8 = 0x04;
    /// COM_STATISTICS.
    pub const STATISTICS: u8 = 0x09;
    /// COM_PING.
    pub const PING: u8 = 0x0E;
    /// COM_CHANGE_USER.
    pub const CHANGE_USER: u8 = 0x11;
    /// COM_STMT_PREPARE.
    pub const STMT_PREPARE: u8 = 0x16;
    /// COM_STMT_EXECUTE.
    pub const STMT_EXECUTE: u8 = 0x17;
    /// COM_STMT_SEND_LONG_DATA.
    pub const STMT_SEND_LONG_DATA: u8 = 0x18;
    /// COM_STMT_CLOSE.
    pub const STMT_CLOSE: u8 = 0x19;
    /// COM_STMT_RESET.
    pub const STMT_RESET: u8 = 0x1A;
    /// COM_SET_OPTION.
    pub const SET_OPTION: u8 = 0x1B;
    /// COM_STMT_FETCH.
    pub const STMT_FETCH: u8 = 0x1C;
    /// COM_RESET_CONNECTION.
    pub const RESET_CONNECTION: u8 = 0x1F;
}

/// Column and parameter types (`MYSQL_TYPE_*`).
pub mod column_type {
    /// DECIMAL (old).
    pub const DECIMAL: u8 = 0x00;
    /// TINYINT.
    pub const TINY: u8 = 0x01;
    /// SMALLINT.
    pub const SHORT: u8 = 0x02;
    /// INT.
    pub const LONG: u8 = 0x03;
    /// FLOAT.
    pub const FLOAT: u8 = 0x04;
    /// DOUBLE.
    pub const DOUBLE: u8 = 0x05;
    /// NULL (parameters / literal NULL columns).
    pub const NULL: u8 = 0x06;
    /// TIMESTAMP.
    pub const TIMESTAMP: u8 = 0x07;
    /// BIGINT.
    pub const LONGLONG: u8 = 0x08;
    /// MEDIUMINT.
    pub const INT24: u8 = 0x09;
    /// DATE.
    pub const DATE: u8 = 0x0A;
    /// TIME.
    pub const TIME: u8 = 0x0B;
    /// DATETIME.
    pub const DATETIME: u8 = 0x0C;
    /// YEAR.
    pub const YEAR: u8 = 0x0D;
    /// NEWDATE (internal).
    pub const NEWDATE: u8 = 0x0E;
    /// VARCHAR.
    pub const VARCHAR: u8 = 0x0F;
    /// BIT.
    pub const BIT: u8 = 0x10;
    /// TIMESTAMP2 (internal).
    pub const TIMESTAMP2: u8 = 0x11;
    /// DATETIME2 (internal).
    pub const DATETIME2: u8 = 0x12;
    /// TIME2 (internal).
    pub const TIME2: u8 = 0x13;
    /// JSON (MySQL; MariaDB sends LONGTEXT/BLOB).
    pub const JSON: u8 = 0xF5;
    /// DECIMAL.
    pub const NEWDECIMAL: u8 = 0xF6;
    /// ENUM.
    pub const ENUM: u8 = 0xF7;
    /// SET.
    pub const SET: u8 = 0xF8;
    /// TINYBLOB/TINYTEXT.
    pub const TINY_BLOB: u8 = 0xF9;
    /// MEDIUMBLOB/MEDIUMTEXT.
    pub const MEDIUM_BLOB: u8 = 0xFA;
    /// LONGBLOB/LONGTEXT.
    pub const LONG_BLOB: u8 = 0xFB;
    /// BLOB/TEXT.
    pub const BLOB: u8 = 0xFC;
    /// VARCHAR/VARBINARY.
    pub const VAR_STRING: u8 = 0xFD;
    /// CHAR/BINARY (also ENUM/SET in result sets).
    pub const STRING: u8 = 0xFE;
    /// GEOMETRY.
    pub const GEOMETRY: u8 = 0xFF;
}

/// Column definition flags.
pub mod column_flag {
    /// NOT NULL.
    pub const NOT_NULL: u16 = 1;
    /// Part of the primary key.
    pub const PRI_KEY: u16 = 1 << 1;
    /// Part of a unique key.
    pub const UNIQUE_KEY: u16 = 1 << 2;
    /// Part of a non-unique key.
    pub const MULTIPLE_KEY: u16 = 1 << 3;
    /// BLOB or TEXT.
    pub const BLOB: u16 = 1 << 4;
    /// UNSIGNED.
    pub const UNSIGNED: u16 = 1 << 5;
    /// ZEROFILL.
    pub const ZEROFILL: u16 = 1 << 6;
    /// Binary collation.
    pub const BINARY: u16 = 1 << 7;
    /// ENUM.
    pub const ENUM: u16 = 1 << 8;
    /// AUTO_INCREMENT.
    pub const AUTO_INCREMENT: u16 = 1 << 9;
    /// TIMESTAMP.
    pub const TIMESTAMP: u16 = 1 << 10;
    /// SET.
    pub const SET: u16 = 1 << 11;
    /// Numeric column.
    pub const NUM: u16 = 1 << 15;
}

/// Character set / collation ids used by Furrow.
pub mod charset {
    /// `binary`: compare bytewise.
    pub const BINARY: u16 = 63;
    /// `utf8mb3_general_ci`.
    pub const UTF8_GENERAL_CI: u16 = 33;
    /// `utf8mb4_general_ci` (MariaDB's utf8mb4 default).
    pub const UTF8MB4_GENERAL_CI: u16 = 45;
    /// `utf8mb4_bin`.
    pub const UTF8MB4_BIN: u16 = 46;
    /// `latin1_swedish_ci`.
    pub const LATIN1_SWEDISH_CI: u16 = 8;
    /// `latin1_bin`.
    pub const LATIN1_BIN: u16 = 47;
    /// `utf8mb3_bin`.
    pub const UTF8_BIN: u16 = 83;
    /// `utf8mb3_unicode_ci`.
    pub const UTF8_UNICODE_CI: u16 = 192;
    /// `utf8mb4_unicode_ci`.
    pub const UTF8MB4_UNICODE_CI: u16 = 224;
    /// `utf8mb4_0900_ai_ci` (MySQL 8 default).
    pub const UTF8MB4_0900_AI_CI: u16 = 255;
}

/// Well-known auth plugin names.
pub mod plugin {
    /// `mysql_native_password`.
    pub const NATIVE_PASSWORD: &str = "mysql_native_password";
    /// `caching_sha2_password`.
    pub const CACHING_SHA2_PASSWORD: &str = "caching_sha2_password";
    /// `mysql_clear_password`.
    pub const CLEAR_PASSWORD: &str = "mysql_clear_password";
}
