//! The client side of the connection phase, sans I/O: one state machine for every place Furrow
//! logs in to a server (the proxy's backend connections, the control plane's store client, the
//! benchmark's load client) and for COM_CHANGE_USER.
//!
//! The caller owns the socket and the framing. It feeds each packet the server sends to
//! [`ClientLogin::on_packet`] and does what the returned [`LoginStep`] says: send a payload with a
//! sequence id, start TLS (then call [`ClientLogin::tls_started`]), read the next packet, or stop
//! because the login is done.
//!
//! What it speaks: HandshakeV10 in, HandshakeResponse41 (or an SSLRequest first) out;
//! `mysql_native_password`; `caching_sha2_password` with its fast path, and its full
//! authentication only over TLS (the password travels as it is, as every client does there;
//! without TLS the RSA exchange would be needed, which this crate does not do, so the login is
//! refused with [`LoginError::FullAuthNeedsTls`]); `mysql_clear_password` only over TLS; auth
//! switch requests to any of them. A greeting plugin it does not speak is answered with a
//! native-password response, which makes the server switch to a plugin it does speak (or
//! refuse).

use bytes::{Bytes, BytesMut};

use super::auth::{AuthPlugin, CachingSha2Action, caching_sha2_client_step};
use super::command::{ChangeUser, Command};
use super::consts::capability::*;
use super::handshake::{AuthSwitchRequest, HandshakeResponse41, HandshakeV10, SslRequest};
use super::response::{EOF_HEADER, ERR_HEADER, OK_HEADER};
use super::{ErrPacket, MysqlError};

/// What the client asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginConfig {
    /// User name.
    pub user: String,
    /// Password (empty: an empty auth response).
    pub password: Vec<u8>,
    /// Default schema to select at login (CLIENT_CONNECT_WITH_DB).
    pub database: Option<String>,
    /// Capabilities wanted; the negotiated set is these limited to what the server offers (plus
    /// CLIENT_LONG_PASSWORD when wanted: MariaDB leaves it out of its greeting to mark itself,
    /// and reads a client without it as a MariaDB client), with CLIENT_PROTOCOL_41 and
    /// CLIENT_SECURE_CONNECTION always, CLIENT_CONNECT_WITH_DB exactly when `database` is set
    /// and CLIENT_SSL exactly when `tls` is.
    pub capabilities: u32,
    /// Client collation id.
    pub charset: u8,
    /// Largest packet the client accepts.
    pub max_packet_size: u32,
    /// Switch to TLS before authenticating; a server that does not offer it is an error.
    pub tls: bool,
    /// MariaDB extended capabilities wanted (`MARIADB_CLIENT_*`); the negotiated set is these
    /// limited to the greeting's. When it is not empty, CLIENT_LONG_PASSWORD ("CLIENT_MYSQL") is
    /// left out of the response: a MariaDB server reads the extended capabilities only then.
    pub mariadb_capabilities: u32,
}

/// A payload to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// Its sequence id.
    pub seq: u8,
    /// The payload (unframed).
    pub payload: Vec<u8>,
}

/// What the caller does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginStep {
    /// Send this, then read the next packet.
    Send(Outgoing),
    /// Send this SSLRequest, run the TLS handshake, then call [`ClientLogin::tls_started`].
    StartTls(Outgoing),
    /// Read the next packet (nothing to send).
    Read,
    /// Logged in (the server's OK was fed).
    Done,
}

/// Why a login failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    /// The server refused: its ERR packet (in the greeting or after authentication).
    #[error("login refused: {} ({})", String::from_utf8_lossy(&.0.message), .0.code)]
    Refused(ErrPacket),
    /// TLS was asked for and the server does not offer it.
    #[error("the server does not offer TLS")]
    NoTls,
    /// caching_sha2_password wants full authentication, which needs TLS here (no RSA).
    #[error(
        "caching_sha2_password full authentication needs TLS (the RSA exchange is not \
         supported); use TLS or a mysql_native_password account"
    )]
    FullAuthNeedsTls,
    /// mysql_clear_password without TLS would send the password in clear.
    #[error("mysql_clear_password is only used over TLS")]
    CleartextNeedsTls,
    /// The server switched to an authentication plugin this client does not speak.
    #[error("unsupported authentication plugin {0:?}")]
    UnsupportedPlugin(String),
    /// A packet that does not belong here, or a malformed one.
    #[error("login protocol: {0}")]
    Protocol(MysqlError),
}

impl From<MysqlError> for LoginError {
    fn from(e: MysqlError) -> Self {
        LoginError::Protocol(e)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for HandshakeV10.
    Greeting,
    /// SSLRequest sent: waiting for the caller's TLS handshake.
    Tls,
    /// Response sent with `plugin`: waiting for OK, ERR, auth switch or more data.
    Auth(AuthPlugin),
    /// Logged in.
    Done,
}

/// One login (or COM_CHANGE_USER) in progress.
#[derive(Debug, Clone)]
pub struct ClientLogin {
    config: LoginConfig,
    state: State,
    tls_active: bool,
    capabilities: u32,
    mariadb_capabilities: u32,
    seq: u8,
    greeting: Option<HandshakeV10>,
    nonce: Vec<u8>,
}

impl ClientLogin {
    /// A login that starts with the server's greeting.
    pub fn new(config: LoginConfig) -> Self {
        ClientLogin {
            config,
            state: State::Greeting,
            tls_active: false,
            capabilities: 0,
            mariadb_capabilities: 0,
            seq: 0,
            greeting: None,
            nonce: Vec::new(),
        }
    }

    /// A COM_CHANGE_USER on a logged-in connection with `capabilities`, answered with
    /// mysql_native_password over `nonce` (the login's scramble; servers switch plugins when
    /// needed); `tls` says whether the connection runs TLS. Returns the machine, expecting the
    /// server's reply, and the command payload to send with sequence id 0.
    pub fn change_user(
        config: LoginConfig,
        capabilities: u32,
        nonce: &[u8],
        tls: bool,
    ) -> (Self, Vec<u8>) {
        let plugin = AuthPlugin::NativePassword;
        let cmd = Command::ChangeUser(ChangeUser {
            username: Bytes::copy_from_slice(config.user.as_bytes()),
            auth_response: Bytes::from(plugin.scramble(&config.password, nonce)),
            database: Bytes::copy_from_slice(config.database.as_deref().unwrap_or("").as_bytes()),
            charset: Some(u16::from(config.charset)),
            auth_plugin_name: Some(Bytes::from_static(plugin.name().as_bytes())),
            // With CLIENT_CONNECT_ATTRS the server reads an attribute block (MariaDB answers
            // "Unknown command" without one).
            connect_attrs: (capabilities & CLIENT_CONNECT_ATTRS != 0).then(Vec::new),
        });
        let mut out = BytesMut::new();
        cmd.encode(&mut out);
        let login = ClientLogin {
            config,
            state: State::Auth(plugin),
            tls_active: tls,
            capabilities,
            // Not renegotiated: the connection keeps what its login negotiated.
            mariadb_capabilities: 0,
            seq: 0,
            greeting: None,
            nonce: nonce.to_vec(),
        };
        (login, out.to_vec())
    }

    /// The server's greeting, once fed.
    pub fn greeting(&self) -> Option<&HandshakeV10> {
        self.greeting.as_ref()
    }

    /// The negotiated capabilities (known after the greeting).
    pub fn capabilities(&self) -> u32 {
        self.capabilities
    }

    /// The negotiated MariaDB extended capabilities (known after the greeting; 0 with a server
    /// that is not MariaDB or when none were wanted).
    pub fn mariadb_capabilities(&self) -> u32 {
        self.mariadb_capabilities
    }

    /// The nonce of the last authentication round (the greeting's scramble, or an auth
    /// switch's): what a later COM_CHANGE_USER answers with.
    pub fn nonce(&self) -> &[u8] {
        &self.nonce
    }

    /// Whether the login is complete.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Feeds a packet from the server with its sequence id.
    pub fn on_packet(&mut self, seq: u8, payload: Bytes) -> Result<LoginStep, LoginError> {
        self.seq = seq.wrapping_add(1);
        match self.state {
            State::Greeting => self.on_greeting(payload),
            State::Auth(plugin) => self.on_auth(plugin, payload),
            State::Tls => {
                Err(MysqlError::Malformed("packet before the TLS handshake".into()).into())
            }
            State::Done => Err(MysqlError::Malformed("packet after the login".into()).into()),
        }
    }

    /// The caller's TLS handshake is done: returns the handshake response to send over it.
    pub fn tls_started(&mut self) -> Result<LoginStep, LoginError> {
        if self.state != State::Tls {
            return Err(MysqlError::Malformed("TLS started out of turn".into()).into());
        }
        self.tls_active = true;
        Ok(LoginStep::Send(self.response()?))
    }

    fn on_greeting(&mut self, payload: Bytes) -> Result<LoginStep, LoginError> {
        if payload.first() == Some(&ERR_HEADER) {
            return Err(LoginError::Refused(ErrPacket::decode(payload)?));
        }
        let hs = HandshakeV10::decode(payload)?;
        let c = &self.config;
        let mut caps = (c.capabilities & (hs.capabilities | CLIENT_LONG_PASSWORD))
            | CLIENT_PROTOCOL_41
            | CLIENT_SECURE_CONNECTION;
        caps &= !(CLIENT_CONNECT_WITH_DB | CLIENT_SSL);
        if c.database.is_some() {
            caps |= CLIENT_CONNECT_WITH_DB;
        }
        let ext = c.mariadb_capabilities & hs.mariadb_capabilities();
        if ext != 0 {
            caps &= !CLIENT_LONG_PASSWORD;
        }
        self.mariadb_capabilities = ext;
        self.nonce = hs.scramble().to_vec();
        self.greeting = Some(hs);
        if self.config.tls {
            let offered = self.greeting.as_ref().map_or(0, |h| h.capabilities);
            if offered & CLIENT_SSL == 0 {
                return Err(LoginError::NoTls);
            }
            caps |= CLIENT_SSL;
            self.capabilities = caps;
            let mut out = BytesMut::with_capacity(SslRequest::LEN);
            SslRequest {
                capabilities: caps,
                max_packet_size: self.config.max_packet_size,
                charset: self.config.charset,
                mariadb_capabilities: self.mariadb_capabilities,
            }
            .encode(&mut out);
            let seq = self.seq;
            self.seq = seq.wrapping_add(1);
            self.state = State::Tls;
            return Ok(LoginStep::StartTls(Outgoing {
                seq,
                payload: out.to_vec(),
            }));
        }
        self.capabilities = caps;
        Ok(LoginStep::Send(self.response()?))
    }

    /// The HandshakeResponse41, answering with the greeting's plugin when spoken (native
    /// password otherwise, and for clear password without TLS).
    fn response(&mut self) -> Result<Outgoing, LoginError> {
        let hs = self.greeting.as_ref().ok_or_else(|| {
            LoginError::from(MysqlError::Malformed(
                "handshake response asked for before the server's greeting".into(),
            ))
        })?;
        let plugin = match AuthPlugin::from_name(&hs.auth_plugin_name) {
            Some(AuthPlugin::ClearPassword) if !self.tls_active => AuthPlugin::NativePassword,
            Some(p) => p,
            None => AuthPlugin::NativePassword,
        };
        let c = &self.config;
        let resp = HandshakeResponse41 {
            capabilities: self.capabilities,
            max_packet_size: c.max_packet_size,
            charset: c.charset,
            mariadb_capabilities: self.mariadb_capabilities,
            username: Bytes::copy_from_slice(c.user.as_bytes()),
            auth_response: Bytes::from(plugin.scramble(&c.password, &self.nonce)),
            database: c
                .database
                .as_ref()
                .map(|d| Bytes::copy_from_slice(d.as_bytes())),
            auth_plugin_name: Some(Bytes::from_static(plugin.name().as_bytes())),
            connect_attrs: Vec::new(),
        };
        let mut out = BytesMut::new();
        resp.encode(&mut out);
        self.state = State::Auth(plugin);
        Ok(Outgoing {
            seq: self.seq,
            payload: out.to_vec(),
        })
    }

    fn on_auth(&mut self, plugin: AuthPlugin, payload: Bytes) -> Result<LoginStep, LoginError> {
        match payload.first() {
            Some(&OK_HEADER) => {
                self.state = State::Done;
                Ok(LoginStep::Done)
            }
            Some(&ERR_HEADER) => Err(LoginError::Refused(ErrPacket::decode(payload)?)),
            Some(&EOF_HEADER) => {
                let sw = AuthSwitchRequest::decode(payload)?;
                let next = AuthPlugin::from_name(&sw.plugin_name).ok_or_else(|| {
                    LoginError::UnsupportedPlugin(
                        String::from_utf8_lossy(&sw.plugin_name).into_owned(),
                    )
                })?;
                if next == AuthPlugin::ClearPassword && !self.tls_active {
                    return Err(LoginError::CleartextNeedsTls);
                }
                self.nonce = sw.scramble().to_vec();
                self.state = State::Auth(next);
                Ok(LoginStep::Send(Outgoing {
                    seq: self.seq,
                    payload: next.scramble(&self.config.password, &self.nonce),
                }))
            }
            Some(0x01) if plugin == AuthPlugin::CachingSha2Password => {
                let action =
                    caching_sha2_client_step(&payload[1..], self.tls_active, &self.config.password);
                match action {
                    CachingSha2Action::AwaitOk => Ok(LoginStep::Read),
                    CachingSha2Action::SendCleartext(p) => Ok(LoginStep::Send(Outgoing {
                        seq: self.seq,
                        payload: p,
                    })),
                    CachingSha2Action::RequestPublicKey
                    | CachingSha2Action::EncryptWithPublicKey(_) => {
                        Err(LoginError::FullAuthNeedsTls)
                    }
                }
            }
            Some(&h) => Err(MysqlError::UnexpectedHeader {
                header: h,
                what: "login reply",
            }
            .into()),
            None => Err(MysqlError::Truncated("login reply").into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mysql::auth::{native_password_hash, verify_caching_sha2, verify_native_password};
    use crate::mysql::handshake::ClientHandshake;

    const NONCE: [u8; 20] = *b"abcdefghijklmnopqrst";

    fn config(tls: bool, database: Option<&str>) -> LoginConfig {
        LoginConfig {
            user: "app".into(),
            password: b"pw".to_vec(),
            database: database.map(String::from),
            capabilities: DEFAULT_CLIENT,
            charset: 45,
            max_packet_size: 1 << 24,
            tls,
            mariadb_capabilities: 0,
        }
    }

    /// A MariaDB-like greeting: no CLIENT_LONG_PASSWORD, `ssl` decides CLIENT_SSL.
    fn greeting(plugin: &str, ssl: bool) -> Bytes {
        let mut caps = (DEFAULT_CLIENT | CLIENT_CONNECT_WITH_DB | CLIENT_DEPRECATE_EOF)
            & !CLIENT_LONG_PASSWORD;
        if ssl {
            caps |= CLIENT_SSL;
        }
        let hs = HandshakeV10::new("11.4.2-MariaDB", 9, NONCE, caps, 45, 2, plugin);
        let mut out = BytesMut::new();
        hs.encode(&mut out);
        out.freeze()
    }

    fn sent(step: LoginStep) -> Outgoing {
        match step {
            LoginStep::Send(o) | LoginStep::StartTls(o) => o,
            other => panic!("expected a payload to send, got {other:?}"),
        }
    }

    fn response(o: &Outgoing) -> HandshakeResponse41 {
        match ClientHandshake::decode(Bytes::from(o.payload.clone())).unwrap() {
            ClientHandshake::Response(r) => r,
            other => panic!("expected a response, got {other:?}"),
        }
    }

    #[test]
    fn native_login_negotiates_and_scrambles() {
        let mut l = ClientLogin::new(config(false, Some("db")));
        let out = sent(
            l.on_packet(0, greeting("mysql_native_password", true))
                .unwrap(),
        );
        assert_eq!(out.seq, 1);
        let r = response(&out);
        assert!(verify_native_password(
            &r.auth_response,
            &NONCE,
            &native_password_hash(b"pw")
        ));
        assert_eq!(&r.username[..], b"app");
        assert_eq!(r.database.as_deref(), Some(&b"db"[..]));
        assert_eq!(r.capabilities, l.capabilities());
        // Wanted ∩ offered, plus LONG_PASSWORD (wanted; MariaDB omits it) and CONNECT_WITH_DB;
        // no SSL (not asked), no DEPRECATE_EOF (not wanted).
        let caps = l.capabilities();
        assert_ne!(caps & CLIENT_LONG_PASSWORD, 0);
        assert_ne!(caps & CLIENT_CONNECT_WITH_DB, 0);
        assert_eq!(caps & (CLIENT_SSL | CLIENT_DEPRECATE_EOF), 0);
        assert_eq!(
            l.on_packet(2, Bytes::from_static(&[0, 0, 0, 2, 0, 0, 0]))
                .unwrap(),
            LoginStep::Done
        );
        assert!(l.is_done());
        assert_eq!(l.greeting().unwrap().connection_id, 9);
        assert_eq!(l.nonce(), &NONCE);
        assert!(l.on_packet(3, Bytes::from_static(&[0])).is_err());
    }

    #[test]
    fn mariadb_extended_capabilities_are_negotiated() {
        use crate::mysql::consts::capability::{
            MARIADB_CLIENT_CACHE_METADATA, MARIADB_CLIENT_PROGRESS,
        };
        let want = MARIADB_CLIENT_CACHE_METADATA | MARIADB_CLIENT_PROGRESS;
        // A MariaDB greeting offering cache metadata (and bulk operations, not wanted).
        let mut hs = HandshakeV10::decode(greeting("mysql_native_password", false)).unwrap();
        hs.reserved[6..10].copy_from_slice(&(MARIADB_CLIENT_CACHE_METADATA | 4).to_le_bytes());
        let mut g = BytesMut::new();
        hs.encode(&mut g);
        let mut c = config(false, None);
        c.mariadb_capabilities = want;
        c.capabilities |= CLIENT_LONG_PASSWORD;
        let mut l = ClientLogin::new(c.clone());
        let r = response(&sent(l.on_packet(0, g.freeze()).unwrap()));
        assert_eq!(r.mariadb_capabilities, MARIADB_CLIENT_CACHE_METADATA);
        assert_eq!(l.mariadb_capabilities(), MARIADB_CLIENT_CACHE_METADATA);
        assert_eq!(
            r.capabilities & CLIENT_LONG_PASSWORD,
            0,
            "the server reads extended capabilities only without CLIENT_MYSQL"
        );
        // A server that offers none (or a MySQL server): nothing extended, CLIENT_LONG_PASSWORD kept.
        let mut l = ClientLogin::new(c);
        let r = response(&sent(
            l.on_packet(0, greeting("mysql_native_password", false))
                .unwrap(),
        ));
        assert_eq!(r.mariadb_capabilities, 0);
        assert_eq!(l.mariadb_capabilities(), 0);
        assert_ne!(r.capabilities & CLIENT_LONG_PASSWORD, 0);
    }

    #[test]
    fn tls_goes_first_and_is_required() {
        let mut l = ClientLogin::new(config(true, None));
        assert_eq!(
            l.on_packet(0, greeting("mysql_native_password", false)),
            Err(LoginError::NoTls)
        );
        let mut l = ClientLogin::new(config(true, None));
        let ssl = sent(
            l.on_packet(0, greeting("mysql_native_password", true))
                .unwrap(),
        );
        assert_eq!((ssl.seq, ssl.payload.len()), (1, SslRequest::LEN));
        assert!(matches!(
            ClientHandshake::decode(Bytes::from(ssl.payload)).unwrap(),
            ClientHandshake::Ssl(_)
        ));
        assert!(l.on_packet(2, Bytes::from_static(&[0])).is_err());
        let mut l = ClientLogin::new(config(true, None));
        l.on_packet(0, greeting("mysql_native_password", true))
            .unwrap();
        let out = sent(l.tls_started().unwrap());
        assert_eq!(out.seq, 2);
        let r = response(&out);
        assert_ne!(r.capabilities & CLIENT_SSL, 0);
        assert_eq!(r.capabilities & CLIENT_CONNECT_WITH_DB, 0);
    }

    #[test]
    fn caching_sha2_fast_path_full_path_and_switch() {
        let sha2 = crate::mysql::auth::caching_sha2_hash(b"pw");
        // Fast path: the response scrambles with SHA256, then 0x01 0x03, then OK.
        let mut l = ClientLogin::new(config(false, None));
        let r = response(&sent(
            l.on_packet(0, greeting("caching_sha2_password", false))
                .unwrap(),
        ));
        assert!(verify_caching_sha2(&r.auth_response, &NONCE, &sha2));
        assert_eq!(
            l.on_packet(2, Bytes::from_static(&[1, 3])).unwrap(),
            LoginStep::Read
        );
        assert_eq!(
            l.on_packet(3, Bytes::from_static(&[0, 0, 0, 2, 0, 0, 0]))
                .unwrap(),
            LoginStep::Done
        );
        // Full authentication: refused without TLS, the password over TLS.
        let mut l = ClientLogin::new(config(false, None));
        l.on_packet(0, greeting("caching_sha2_password", false))
            .unwrap();
        assert_eq!(
            l.on_packet(2, Bytes::from_static(&[1, 4])),
            Err(LoginError::FullAuthNeedsTls)
        );
        let mut l = ClientLogin::new(config(true, None));
        l.on_packet(0, greeting("caching_sha2_password", true))
            .unwrap();
        l.tls_started().unwrap();
        let out = sent(l.on_packet(3, Bytes::from_static(&[1, 4])).unwrap());
        assert_eq!((out.seq, &out.payload[..]), (4, &b"pw\0"[..]));
        // A switch from native to caching_sha2 with a new nonce.
        let mut l = ClientLogin::new(config(false, None));
        l.on_packet(0, greeting("mysql_native_password", false))
            .unwrap();
        let mut sw = BytesMut::new();
        AuthSwitchRequest {
            plugin_name: Bytes::from_static(b"caching_sha2_password"),
            plugin_data: Bytes::from_static(b"ABCDEFGHIJKLMNOPQRST\0"),
        }
        .encode(&mut sw);
        let out = sent(l.on_packet(2, sw.freeze()).unwrap());
        assert_eq!(out.seq, 3);
        assert!(verify_caching_sha2(
            &out.payload,
            b"ABCDEFGHIJKLMNOPQRST",
            &sha2
        ));
        assert_eq!(l.nonce(), b"ABCDEFGHIJKLMNOPQRST");
    }

    #[test]
    fn refusals_and_unknown_plugins() {
        let mut err = BytesMut::new();
        ErrPacket::new(1045, "28000", "Access denied").encode(&mut err);
        let mut l = ClientLogin::new(config(false, None));
        l.on_packet(0, greeting("mysql_native_password", false))
            .unwrap();
        match l.on_packet(2, err.clone().freeze()) {
            Err(LoginError::Refused(e)) => assert_eq!(e.code, 1045),
            other => panic!("{other:?}"),
        }
        // An ERR instead of a greeting (too many connections, host blocked).
        let mut l = ClientLogin::new(config(false, None));
        assert!(matches!(
            l.on_packet(0, err.freeze()),
            Err(LoginError::Refused(_))
        ));
        // A greeting plugin not spoken: answer with native password (the server switches).
        let mut l = ClientLogin::new(config(false, None));
        let r = response(&sent(
            l.on_packet(0, greeting("client_ed25519", false)).unwrap(),
        ));
        assert_eq!(
            r.auth_plugin_name.as_deref(),
            Some(&b"mysql_native_password"[..])
        );
        // A switch to one not spoken, or to clear text without TLS: refused.
        for (name, want) in [
            (
                &b"client_ed25519"[..],
                LoginError::UnsupportedPlugin("client_ed25519".into()),
            ),
            (&b"mysql_clear_password"[..], LoginError::CleartextNeedsTls),
        ] {
            let mut l = ClientLogin::new(config(false, None));
            l.on_packet(0, greeting("mysql_native_password", false))
                .unwrap();
            let mut sw = BytesMut::new();
            AuthSwitchRequest {
                plugin_name: Bytes::copy_from_slice(name),
                plugin_data: Bytes::from_static(b"x\0"),
            }
            .encode(&mut sw);
            assert_eq!(l.on_packet(2, sw.freeze()), Err(want));
        }
    }

    #[test]
    fn change_user_payload_and_reply() {
        let (mut l, payload) =
            ClientLogin::change_user(config(false, None), DEFAULT_CLIENT, &NONCE, false);
        match Command::decode(Bytes::from(payload)).unwrap() {
            Command::ChangeUser(cu) => {
                assert_eq!(&cu.username[..], b"app");
                assert!(cu.database.is_empty());
                assert!(verify_native_password(
                    &cu.auth_response,
                    &NONCE,
                    &native_password_hash(b"pw")
                ));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            l.on_packet(1, Bytes::from_static(&[0, 0, 0, 2, 0, 0, 0]))
                .unwrap(),
            LoginStep::Done
        );
    }
}
