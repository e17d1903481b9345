//! Login: the greeting, TLS upgrade, authentication (with auth switch), COM_CHANGE_USER and the
//! schema check a login with a database makes.

use std::net::IpAddr;
use std::rc::Rc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use codec::mysql::consts::capability::*;
use codec::mysql::consts::status;
use codec::mysql::{
    AuthMoreData, AuthSwitchRequest, ChangeUser, ClientHandshake, Command, ErrPacket,
    HandshakeResponse41, HandshakeV10, Packet, PacketDecoder, auth,
};
use router::config::User;

use crate::access::schema_allowed;
use crate::backend::BACKEND_COLLATION;
use crate::conn::ConnError;
use crate::error::{ProxyError, errs};
use crate::vars::VarState;

use super::{
    ANNOUNCED_PLUGIN, Dest, Flow, LINGER, SERVER_CAPS, SERVER_VERSION, Session, random_u64,
};

impl Session {
    /// After a refused login: stops writing, then reads and drops what the client still sends
    /// (for at most [`LINGER`]), so that the close is a FIN after our ERR rather than a reset that
    /// may discard it at the client. Nothing read is kept.
    pub(super) async fn linger(&mut self) {
        use tokio::io::AsyncReadExt;
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut self.client.stream).await;
        let mut sink = [0u8; 4096];
        let _ = tokio::time::timeout(LINGER, async {
            while let Ok(n) = self.client.stream.read(&mut sink).await
                && n > 0
            {}
        })
        .await;
    }

    /// Reads the client's next packet of the login exchange, which must carry sequence id
    /// `expected`. An over-cap packet, bad framing or a wrong sequence id queue an ERR and give
    /// `Ok(None)` (the caller refuses the login and closes).
    pub(super) async fn read_login_packet(
        &mut self,
        expected: u8,
    ) -> Result<Option<Packet>, ConnError> {
        let read = tokio::time::timeout(Duration::from_secs(10), self.client.read_packet()).await;
        let p = match read {
            Err(_) => return Err(ConnError::Io(std::io::ErrorKind::TimedOut.into())),
            Ok(Err(ConnError::Protocol(e))) => {
                // The client numbers its answer after the packet it sent.
                let sent = self.client.rbuf.get(3).copied().unwrap_or(expected);
                self.refuse(
                    sent.wrapping_add(1),
                    &ProxyError::ClientProtocol(e).to_err_packet(),
                );
                return Ok(None);
            }
            Ok(Err(e)) => return Err(e),
            Ok(Ok(p)) => p,
        };
        if p.seq != expected {
            self.refuse(p.last_seq.wrapping_add(1), &errs::out_of_order());
            return Ok(None);
        }
        Ok(Some(p))
    }

    /// Counts a failed login of this client's address (login throttling).
    pub(super) fn login_failed(&mut self) {
        let window = self.snap.get().config.proxy.login_block;
        self.shared.logins.failed(self.peer.ip(), window);
    }

    /// The greeting and the client's answer to it, over TLS when it asks for it (an address
    /// with too many failed logins is refused first). Returns the answer, the next packet number
    /// and the capabilities offered; `None` when the client was refused (an ERR is queued).
    async fn greet(&mut self) -> Result<Option<(HandshakeResponse41, u8, u32)>, ConnError> {
        // An address with too many failed logins is refused before the greeting, as a server
        // refuses a blocked host.
        let proxy = self.snap.get().config.proxy.clone();
        if let Some(left) =
            self.shared
                .logins
                .blocked(self.peer.ip(), proxy.max_login_failures, proxy.login_block)
        {
            self.refuse(0, &errs::host_blocked(&self.peer.ip().to_string(), left));
            return Ok(None);
        }
        // Governance source lists (registry rules), as a server refuses a host it does not know.
        if let Some(g) = &proxy.governance
            && !g.admits_source(self.peer.ip())
        {
            self.refuse(0, &errs::host_not_allowed(&self.peer.ip().to_string()));
            return Ok(None);
        }
        self.scramble = match crate::nonce::scramble() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the OS random generator for a login nonce");
                self.refuse(0, &errs::no_nonce());
                return Ok(None);
            }
        };
        // TLS as the current config has it for this listener (certificates follow reloads).
        let tls = self
            .snap
            .get()
            .config
            .listener(&self.info.name)
            .and_then(|l| l.tls.as_ref())
            .map(|t| t.config.clone());
        let offered = if tls.is_some() {
            SERVER_CAPS | CLIENT_SSL
        } else {
            SERVER_CAPS
        };
        let mut hs = HandshakeV10::new(
            SERVER_VERSION,
            self.id as u32,
            self.scramble,
            offered,
            BACKEND_COLLATION,
            status::SERVER_STATUS_AUTOCOMMIT,
            ANNOUNCED_PLUGIN,
        );
        // MariaDB clients may cache result metadata (prepared statements' executions then come
        // without column definitions they hold): offered as a MariaDB server does, in the
        // greeting's last reserved bytes with CLIENT_LONG_PASSWORD ("CLIENT_MYSQL") left out.
        // Not on sharded listeners, whose replies the proxy builds. Whether the client took it
        // is read from its response in `handshake`.
        let snap = self.snap.get().clone();
        self.client.cache_meta = self.shard_rules(&snap).is_none();
        if self.client.cache_meta {
            hs.capabilities &= !CLIENT_LONG_PASSWORD;
            hs.reserved[6..10].copy_from_slice(&MARIADB_CLIENT_CACHE_METADATA.to_le_bytes());
        }
        let mut out = BytesMut::with_capacity(128);
        hs.encode(&mut out);
        self.client.queue(0, &out);
        self.client.flush().await?;
        let Some(p) = self.read_login_packet(1).await? else {
            return Ok(None);
        };
        let mut seq = p.next_seq();
        let mut decoded = ClientHandshake::decode(p.payload);
        if let Ok(ClientHandshake::Ssl(_)) = decoded {
            let Some(config) = tls else {
                self.refuse(seq, &errs::tls_not_supported());
                return Ok(None);
            };
            // The TLS handshake, then the real response over TLS; sequence ids continue.
            match tokio::time::timeout(Duration::from_secs(10), self.client.accept_tls(config))
                .await
            {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(ConnError::Io(std::io::ErrorKind::TimedOut.into())),
            }
            let Some(p) = self.read_login_packet(seq).await? else {
                return Ok(None);
            };
            seq = p.next_seq();
            decoded = ClientHandshake::decode(p.payload);
        }
        let resp = match decoded {
            Ok(ClientHandshake::Response(r)) => r,
            Ok(ClientHandshake::Ssl(_)) => {
                self.refuse(seq, &errs::second_ssl_request());
                return Ok(None);
            }
            Err(e) => {
                self.refuse(seq, &ProxyError::ClientProtocol(e).to_err_packet());
                return Ok(None);
            }
        };
        Ok(Some((resp, seq, offered)))
    }

    /// The user name a login or COM_CHANGE_USER gives, the client's host (for the ERR messages),
    /// and the listener's user of that name in the current snapshot.
    fn lookup_user(&mut self, username: &[u8]) -> (String, String, Option<User>) {
        let name = String::from_utf8_lossy(username).into_owned();
        let host = self.peer.ip().to_string();
        let user = self
            .snap
            .get()
            .config
            .users_for(&self.info.name)
            .find(|u| u.name == name)
            .cloned();
        (name, host, user)
    }

    /// The login: greeting, authentication, the schema asked for. Returns `Ok(false)` when the
    /// client was refused (an ERR is queued).
    pub(super) async fn handshake(&mut self) -> Result<bool, ConnError> {
        let Some((resp, mut seq, offered)) = self.greet().await? else {
            return Ok(false);
        };
        self.caps = resp.capabilities & offered;
        self.client.cache_meta &= resp.mariadb_capabilities & MARIADB_CLIENT_CACHE_METADATA != 0;
        self.client.meta_skip = self.client.cache_meta && skips_metadata_safely(&resp);
        self.multi_statements = self.caps & CLIENT_MULTI_STATEMENTS != 0;
        let (name, host, user) = self.lookup_user(&resp.username);
        let Some(user) = user else {
            self.login_failed();
            self.refuse(
                seq,
                &errs::access_denied(&name, &host, !resp.auth_response.is_empty()),
            );
            return Ok(false);
        };
        if !host_allowed(&user, self.peer.ip()) {
            self.refuse(seq, &errs::host_not_allowed(&host));
            return Ok(false);
        }
        let plugin = resp
            .auth_plugin_name
            .as_ref()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .unwrap_or_else(|| ANNOUNCED_PLUGIN.into());
        let mut response = resp.auth_response.clone();
        let mut plugin_used = plugin.clone();
        // A client whose default plugin is not the announced one answers with nothing and waits
        // for an auth switch (libmariadb and libmysqlclient do so: they computed no answer for
        // another plugin's data); the servers switch it to the account's plugin. So do we, as for
        // a plugin whose hash the user lacks.
        let wants_switch = response.is_empty() && plugin != ANNOUNCED_PLUGIN;
        if wants_switch || !can_check(&user, &plugin) {
            match self.auth_switch(&user, seq).await? {
                Some(switched) => (plugin_used, response, seq) = switched,
                None => return Ok(false),
            }
        }
        // A `require_tls` user without TLS is refused as a server refuses a `REQUIRE SSL` account:
        // "Access denied", whatever the password.
        if !verify(&user, &plugin_used, &response, &self.scramble)
            || (user.require_tls && !self.client.stream.is_tls())
        {
            self.login_failed();
            self.refuse(
                seq,
                &errs::access_denied(&name, &host, !response.is_empty()),
            );
            return Ok(false);
        }
        self.shared.logins.succeeded(self.peer.ip());
        if let Some(e) = self.caller_refused(&user.name, &host) {
            self.refuse(seq, &e);
            return Ok(false);
        }
        seq = self.queue_fast_auth(&plugin_used, seq);
        self.user = user.name.clone();
        self.read_policy = user.read_policy;
        self.allow_hints = user.allow_hints;
        self.vars = VarState::for_collation(resp.charset);
        if let Some(db) = resp.database.filter(|d| !d.is_empty()) {
            let db = String::from_utf8_lossy(&db).into_owned();
            if !schema_allowed(&user, &db) {
                self.refuse(seq, &errs::db_access_denied(&name, &host, &db));
                return Ok(false);
            }
            self.schema = Some(Rc::from(db.as_str()));
            // Validate the schema now, as a server would at connect time. A sharded listener serves
            // one logical database whose shard schemas come from the rules: any name selects it, as
            // COM_INIT_DB does there.
            let sharded =
                crate::shard::rules_for(&self.info.core, &self.snap.get().clone(), &self.info.name)
                    .is_some();
            if !sharded && let Err(e) = self.check_schema().await {
                self.refuse(seq, &e.to_err_packet());
                return Ok(false);
            }
        }
        self.client.queue_ok(seq, 0, 0, self.status_flags());
        self.client.flush().await?;
        // Logged in: packets up to the listener's cap from now on.
        self.client.decoder = PacketDecoder::new(self.info.max_frame);
        Ok(true)
    }

    /// Asks the client (`AuthSwitchRequest` with packet number `seq`) to answer again with a
    /// plugin that `user`'s stored hashes can verify; returns that plugin, the client's answer
    /// and the next packet number; `None` when the answer was refused (an ERR is queued).
    pub(super) async fn auth_switch(
        &mut self,
        user: &User,
        seq: u8,
    ) -> Result<Option<(String, Bytes, u8)>, ConnError> {
        let target = if user.native_hash.is_some() {
            "mysql_native_password"
        } else {
            "caching_sha2_password"
        };
        let mut data = BytesMut::with_capacity(21);
        data.extend_from_slice(&self.scramble);
        data.extend_from_slice(&[0]);
        let sw = AuthSwitchRequest {
            plugin_name: Bytes::from_static(target.as_bytes()),
            plugin_data: data.freeze(),
        };
        let mut out = BytesMut::new();
        sw.encode(&mut out);
        let expected = self.client.queue(seq, &out);
        self.client.flush().await?;
        let Some(p) = self.read_login_packet(expected).await? else {
            return Ok(None);
        };
        let next = p.next_seq();
        Ok(Some((target.to_string(), p.payload, next)))
    }

    /// After a successful `caching_sha2_password` check, queues the "fast auth success" packet
    /// that precedes the OK (as a MySQL 8 server does); returns the next packet number.
    pub(super) fn queue_fast_auth(&mut self, plugin_used: &str, seq: u8) -> u8 {
        if plugin_used != "caching_sha2_password" {
            return seq;
        }
        let mut out = BytesMut::new();
        AuthMoreData {
            data: Bytes::from_static(&[auth::FAST_AUTH_SUCCESS]),
        }
        .encode(&mut out);
        self.client.queue(seq, &out)
    }

    pub(super) async fn check_schema(&mut self) -> Result<(), ProxyError> {
        let snap = self.snap.get().clone();
        let Some(g) = self.group(&snap) else {
            return Err(ProxyError::Internal(errs::no_backend(
                &self.info.group,
                "group",
            )));
        };
        let targets = self.group_targets(&snap)?;
        // Any server that is up can tell whether the schema exists: the primary first, then every
        // usable replica in a random order while they cannot be reached (a replica back from its
        // ejection on probation may still be down: the next one is asked).
        let r = random_u64(&mut self.rng);
        let mut candidates = Vec::with_capacity(1 + targets.replicas.len());
        if targets.primary.state.usable() {
            candidates.push(targets.primary.clone());
        }
        let mut tried: Vec<Rc<str>> = Vec::new();
        while let Some(x) = targets.any_usable_replica(r, &tried) {
            tried.push(x.name.clone());
            candidates.push(x.clone());
        }
        if candidates.is_empty() {
            candidates.push(targets.primary.clone());
        }
        let last = candidates.len() - 1;
        for (i, t) in candidates.into_iter().enumerate() {
            // Outside `dispatch`: the session's clock is as old as the login.
            self.now = std::time::Instant::now();
            match self.acquire(Dest::Server(t, true), g).await {
                Ok(c) => {
                    self.release(c);
                    return Ok(());
                }
                Err(e) if e.retryable() && i < last => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    pub(super) async fn change_user(&mut self, payload: Bytes) -> Flow {
        let cu = match Command::decode(payload) {
            Ok(Command::ChangeUser(cu)) => cu,
            _ => return self.malformed(),
        };
        let ChangeUser {
            username,
            auth_response,
            database,
            charset,
            auth_plugin_name,
            ..
        } = cu;
        let (name, host, user) = self.lookup_user(&username);
        let mut plugin = auth_plugin_name
            .map(|p| String::from_utf8_lossy(&p).into_owned())
            .unwrap_or_else(|| ANNOUNCED_PLUGIN.into());
        let mut response = auth_response;
        let mut seq = 1;
        // As at login (and as a server does for COM_CHANGE_USER): when the client answered with a
        // plugin the user's stored hashes cannot check (a caching_sha2-only user and a client that
        // logged in with mysql_native_password), switch it to one they can instead of refusing a
        // correct password.
        // And as at login, an empty answer for another plugin asks for a switch.
        let wants_switch = response.is_empty() && plugin != ANNOUNCED_PLUGIN;
        if let Some(u) = &user
            && host_allowed(u, self.peer.ip())
            && (wants_switch || !can_check(u, &plugin))
        {
            match self.auth_switch(u, seq).await {
                Ok(Some(switched)) => (plugin, response, seq) = switched,
                Ok(None) | Err(_) => return Flow::Close,
            }
        }
        let ok = user.as_ref().is_some_and(|u| {
            host_allowed(u, self.peer.ip())
                && verify(u, &plugin, &response, &self.scramble)
                && (!u.require_tls || self.client.stream.is_tls())
        });
        let Some(user) = user.filter(|_| ok) else {
            self.login_failed();
            self.refuse(
                seq,
                &errs::access_denied(&name, &host, !response.is_empty()),
            );
            return Flow::Close;
        };
        if let Some(e) = self.caller_refused(&user.name, &host) {
            self.refuse(seq, &e);
            return Flow::Close;
        }
        let seq = self.queue_fast_auth(&plugin, seq);
        let db = String::from_utf8_lossy(&database).into_owned();
        if !db.is_empty() && !schema_allowed(&user, &db) {
            self.refuse(seq, &errs::db_access_denied(&name, &host, &db));
            return Flow::Close;
        }
        self.reset_session(Some(charset.map_or(BACKEND_COLLATION, |c| c as u8)))
            .await;
        self.user = user.name.clone();
        self.read_policy = user.read_policy;
        self.allow_hints = user.allow_hints;
        self.schema = (!db.is_empty()).then(|| Rc::from(db.as_str()));
        if self.schema.is_some()
            && let Err(e) = self.check_schema().await
        {
            self.refuse(seq, &e.to_err_packet());
            return Flow::Continue;
        }
        self.client.queue_ok(seq, 0, 0, self.status_flags());
        Flow::Continue
    }
}

impl Session {
    /// The ERR for a login of `user` that a governance caller list refuses (the caller of a proxy is
    /// its user); None when every list admits it.
    fn caller_refused(&mut self, user: &str, host: &str) -> Option<ErrPacket> {
        let g = self.snap.get().config.proxy.governance.clone()?;
        g.admits_caller(user)
            .err()
            .map(|l| errs::caller_refused(user, host, &l.message))
    }
}

fn host_allowed(u: &User, ip: IpAddr) -> bool {
    u.hosts.is_empty() || u.hosts.iter().any(|n| n.contains(ip))
}

/// Whether `u`'s stored hashes can check an answer made with `plugin`.
fn can_check(u: &User, plugin: &str) -> bool {
    match plugin {
        "mysql_native_password" => u.native_hash.is_some(),
        "caching_sha2_password" => u.sha256_hash.is_some(),
        _ => false,
    }
}

fn verify(u: &User, plugin: &str, response: &[u8], scramble: &[u8; 20]) -> bool {
    match plugin {
        "caching_sha2_password" => match &u.sha256_hash {
            Some(h) => {
                auth::verify_caching_sha2(response, scramble, h)
                    || (response.is_empty() && *h == auth::caching_sha2_hash(b""))
            }
            None => false,
        },
        _ => match &u.native_hash {
            Some(h) => {
                auth::verify_native_password(response, scramble, h)
                    || (response.is_empty() && *h == auth::native_password_hash(b""))
            }
            None => false,
        },
    }
}

/// Whether a client that negotiated cached metadata may be sent executions without definitions
/// (`Conn::meta_skip`): only libmariadb (MariaDB Connector/C, under sysbench, mysqlclient, PHP's
/// and others' MariaDB bindings), which never asks for CLIENT_DEPRECATE_EOF and reads the EOF that
/// follows a skipped definition block as MariaDB sends it. Other clients are sent the definitions
/// with every execution (metadata-follows 1, always valid): a driver that skips them only
/// together with DEPRECATE_EOF, which Furrow does not grant, misreads that EOF (mysql_async
/// 0.37 does: it reads it as the end of the rows).
fn skips_metadata_safely(resp: &HandshakeResponse41) -> bool {
    resp.connect_attrs
        .iter()
        .any(|(k, v)| &k[..] == b"_client_name" && &v[..] == b"libmariadb")
}
