//! Connection phase packets: HandshakeV10, SSLRequest, HandshakeResponse41, AuthSwitchRequest,
//! AuthMoreData.

use bytes::{BufMut, Bytes, BytesMut};

use super::auth::AuthPlugin;
use super::consts::capability::*;
use super::wire::{Reader, put_lenenc_bytes, put_lenenc_int, put_nul_bytes};
use super::{MysqlError, Result};

/// The server's initial handshake (protocol version 10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeV10 {
    /// Server version string, e.g. `10.11.6-MariaDB`.
    pub server_version: Bytes,
    /// Connection (thread) id.
    pub connection_id: u32,
    /// Auth plugin data as on the wire: part 1 (8 bytes) followed by part 2 (usually 12 bytes and
    /// a NUL). [`HandshakeV10::scramble`] gives the 20-byte nonce.
    pub auth_plugin_data: Bytes,
    /// Full 32-bit capability flags.
    pub capabilities: u32,
    /// Default collation id.
    pub charset: u8,
    /// Server status flags.
    pub status: u16,
    /// The auth-plugin-data-length byte as sent (0 without CLIENT_PLUGIN_AUTH).
    pub auth_plugin_data_len: u8,
    /// The 10 reserved bytes; MariaDB puts its extended capabilities in the last 4 when
    /// CLIENT_LONG_PASSWORD ("CLIENT_MYSQL") is unset.
    pub reserved: [u8; 10],
    /// Auth plugin name (present with CLIENT_PLUGIN_AUTH).
    pub auth_plugin_name: Bytes,
}

impl HandshakeV10 {
    /// A server handshake with a 20-byte scramble, laid out as MySQL/MariaDB do.
    pub fn new(
        server_version: &str,
        connection_id: u32,
        scramble: [u8; 20],
        capabilities: u32,
        charset: u8,
        status: u16,
        auth_plugin_name: &str,
    ) -> Self {
        let mut data = BytesMut::with_capacity(21);
        data.put_slice(&scramble);
        data.put_u8(0);
        HandshakeV10 {
            server_version: Bytes::copy_from_slice(server_version.as_bytes()),
            connection_id,
            auth_plugin_data: data.freeze(),
            capabilities,
            charset,
            status,
            auth_plugin_data_len: 21,
            reserved: [0; 10],
            auth_plugin_name: Bytes::copy_from_slice(auth_plugin_name.as_bytes()),
        }
    }

    /// The nonce to scramble passwords with (at most 20 bytes, trailing NUL removed).
    pub fn scramble(&self) -> &[u8] {
        let d = &self.auth_plugin_data[..];
        let d = d.strip_suffix(&[0]).unwrap_or(d);
        &d[..d.len().min(20)]
    }

    /// MariaDB extended capabilities (0 when the server is not MariaDB).
    pub fn mariadb_capabilities(&self) -> u32 {
        if self.capabilities & CLIENT_LONG_PASSWORD != 0 {
            return 0;
        }
        let r = &self.reserved;
        u32::from_le_bytes([r[6], r[7], r[8], r[9]])
    }

    /// Parses the payload (client side).
    pub fn decode(payload: Bytes) -> Result<Self> {
        let mut r = Reader::new(payload);
        let version = r.u8("protocol version")?;
        if version != 10 {
            return Err(MysqlError::UnexpectedHeader {
                header: version,
                what: "HandshakeV10",
            });
        }
        let server_version = r.nul_bytes("server version")?;
        let connection_id = r.u32("connection id")?;
        let part1 = r.slice(8, "auth plugin data part 1")?.to_vec();
        r.skip(1, "filler")?;
        let cap_low = r.u16("capability flags")?;
        let mut hs = HandshakeV10 {
            server_version,
            connection_id,
            auth_plugin_data: Bytes::new(),
            capabilities: u32::from(cap_low),
            charset: 0,
            status: 0,
            auth_plugin_data_len: 0,
            reserved: [0; 10],
            auth_plugin_name: Bytes::new(),
        };
        hs.charset = r.u8("charset")?;
        hs.status = r.u16("status flags")?;
        hs.capabilities |= u32::from(r.u16("capability flags upper")?) << 16;
        hs.auth_plugin_data_len = r.u8("auth plugin data length")?;
        hs.reserved = r.array("reserved")?;
        let mut data = part1;
        if hs.capabilities & CLIENT_SECURE_CONNECTION != 0 {
            let n = usize::from(hs.auth_plugin_data_len)
                .saturating_sub(8)
                .max(13);
            data.extend_from_slice(r.slice(n, "auth plugin data part 2")?);
        }
        hs.auth_plugin_data = Bytes::from(data);
        if hs.capabilities & CLIENT_PLUGIN_AUTH != 0 {
            hs.auth_plugin_name = r.nul_or_eof_bytes("auth plugin name")?;
        }
        r.finish("HandshakeV10")?;
        Ok(hs)
    }

    /// Appends the payload (server side).
    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u8(10);
        put_nul_bytes(out, &self.server_version);
        out.put_u32_le(self.connection_id);
        let data = &self.auth_plugin_data[..];
        let mut part1 = [0u8; 8];
        let n1 = data.len().min(8);
        part1[..n1].copy_from_slice(&data[..n1]);
        out.put_slice(&part1);
        out.put_u8(0);
        out.put_u16_le(self.capabilities as u16);
        out.put_u8(self.charset);
        out.put_u16_le(self.status);
        out.put_u16_le((self.capabilities >> 16) as u16);
        out.put_u8(self.auth_plugin_data_len);
        out.put_slice(&self.reserved);
        if self.capabilities & CLIENT_SECURE_CONNECTION != 0 {
            let n = usize::from(self.auth_plugin_data_len)
                .saturating_sub(8)
                .max(13);
            let part2 = &data[n1..];
            let take = part2.len().min(n);
            out.put_slice(&part2[..take]);
            out.put_bytes(0, n - take);
        }
        if self.capabilities & CLIENT_PLUGIN_AUTH != 0 {
            put_nul_bytes(out, &self.auth_plugin_name);
        }
    }
}

/// The first 32 bytes of a handshake response, sent alone to ask for TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SslRequest {
    /// Client capabilities (includes CLIENT_SSL).
    pub capabilities: u32,
    /// Max packet size the client wants.
    pub max_packet_size: u32,
    /// Client collation id.
    pub charset: u8,
    /// MariaDB extended capabilities (last 4 filler bytes).
    pub mariadb_capabilities: u32,
}

impl SslRequest {
    /// Length of the payload.
    pub const LEN: usize = 32;

    fn decode_from(r: &mut Reader) -> Result<Self> {
        let capabilities = r.u32("client capabilities")?;
        let max_packet_size = r.u32("max packet size")?;
        let charset = r.u8("charset")?;
        r.skip(19, "filler")?;
        let mariadb_capabilities = r.u32("mariadb capabilities")?;
        Ok(SslRequest {
            capabilities,
            max_packet_size,
            charset,
            mariadb_capabilities,
        })
    }

    /// Appends the payload.
    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u32_le(self.capabilities);
        out.put_u32_le(self.max_packet_size);
        out.put_u8(self.charset);
        out.put_bytes(0, 19);
        out.put_u32_le(self.mariadb_capabilities);
    }
}

/// The client's handshake response (protocol 4.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeResponse41 {
    /// Client capabilities.
    pub capabilities: u32,
    /// Max packet size the client wants.
    pub max_packet_size: u32,
    /// Client collation id.
    pub charset: u8,
    /// MariaDB extended capabilities (last 4 filler bytes).
    pub mariadb_capabilities: u32,
    /// User name.
    pub username: Bytes,
    /// Auth response (the scramble).
    pub auth_response: Bytes,
    /// Initial database (with CLIENT_CONNECT_WITH_DB).
    pub database: Option<Bytes>,
    /// Auth plugin the response was computed with (with CLIENT_PLUGIN_AUTH).
    pub auth_plugin_name: Option<Bytes>,
    /// Connection attributes, key/value pairs in wire order (with CLIENT_CONNECT_ATTRS).
    pub connect_attrs: Vec<(Bytes, Bytes)>,
}

/// What a client sends after HandshakeV10: either a full response or a request to start TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientHandshake {
    /// Switch to TLS; the full response follows over TLS.
    Ssl(SslRequest),
    /// The handshake response.
    Response(HandshakeResponse41),
}

impl ClientHandshake {
    /// Parses a client payload of the handshake phase (server side).
    pub fn decode(payload: Bytes) -> Result<Self> {
        if payload.len() == SslRequest::LEN {
            let mut r = Reader::new(payload);
            let req = SslRequest::decode_from(&mut r)?;
            if req.capabilities & CLIENT_SSL == 0 {
                return Err(MysqlError::Malformed(
                    "SSLRequest without CLIENT_SSL".into(),
                ));
            }
            return Ok(ClientHandshake::Ssl(req));
        }
        HandshakeResponse41::decode(payload).map(ClientHandshake::Response)
    }
}

impl HandshakeResponse41 {
    /// Client side: the response to `hs` logging in as `username`, scrambling `password` with
    /// the server's plugin (falling back to mysql_native_password for plugins Furrow does not
    /// speak; the server then sends an AuthSwitchRequest). Capabilities are `wanted` limited to
    /// what the server offers.
    pub fn for_server(
        hs: &HandshakeV10,
        username: &str,
        password: &[u8],
        database: Option<&str>,
        wanted: u32,
        charset: u8,
    ) -> Self {
        let plugin = AuthPlugin::from_name(&hs.auth_plugin_name)
            .filter(|p| *p != AuthPlugin::ClearPassword)
            .unwrap_or(AuthPlugin::NativePassword);
        let mut capabilities =
            (wanted & hs.capabilities) | CLIENT_PROTOCOL_41 | CLIENT_SECURE_CONNECTION;
        capabilities &= !CLIENT_CONNECT_WITH_DB;
        if database.is_some() {
            capabilities |= CLIENT_CONNECT_WITH_DB;
        }
        HandshakeResponse41 {
            capabilities,
            max_packet_size: 1 << 24,
            charset,
            mariadb_capabilities: 0,
            username: Bytes::copy_from_slice(username.as_bytes()),
            auth_response: Bytes::from(plugin.scramble(password, hs.scramble())),
            database: database.map(|d| Bytes::copy_from_slice(d.as_bytes())),
            auth_plugin_name: Some(Bytes::from_static(plugin.name().as_bytes())),
            connect_attrs: Vec::new(),
        }
    }

    /// Parses the payload (server side).
    pub fn decode(payload: Bytes) -> Result<Self> {
        let mut r = Reader::new(payload);
        let head = SslRequest::decode_from(&mut r)?;
        let caps = head.capabilities;
        if caps & CLIENT_PROTOCOL_41 == 0 {
            return Err(MysqlError::Malformed(
                "client does not speak protocol 4.1".into(),
            ));
        }
        let username = r.nul_bytes("user name")?;
        let auth_response = if caps & CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA != 0 {
            r.lenenc_bytes("auth response")?
        } else if caps & CLIENT_SECURE_CONNECTION != 0 {
            let n = r.u8("auth response length")?;
            r.bytes(usize::from(n), "auth response")?
        } else {
            r.nul_bytes("auth response")?
        };
        let mut resp = HandshakeResponse41 {
            capabilities: caps,
            max_packet_size: head.max_packet_size,
            charset: head.charset,
            mariadb_capabilities: head.mariadb_capabilities,
            username,
            auth_response,
            database: None,
            auth_plugin_name: None,
            connect_attrs: Vec::new(),
        };
        if caps & CLIENT_CONNECT_WITH_DB != 0 && !r.is_empty() {
            resp.database = Some(r.nul_bytes("database")?);
        }
        if caps & CLIENT_PLUGIN_AUTH != 0 && !r.is_empty() {
            resp.auth_plugin_name = Some(r.nul_or_eof_bytes("auth plugin name")?);
        }
        if caps & CLIENT_CONNECT_ATTRS != 0 && !r.is_empty() {
            resp.connect_attrs = decode_attrs(&mut r)?;
        }
        r.finish("HandshakeResponse41")?;
        Ok(resp)
    }

    /// Appends the payload (client side). Length-prefixes the auth response according to the
    /// capability flags.
    pub fn encode(&self, out: &mut BytesMut) {
        SslRequest {
            capabilities: self.capabilities,
            max_packet_size: self.max_packet_size,
            charset: self.charset,
            mariadb_capabilities: self.mariadb_capabilities,
        }
        .encode(out);
        put_nul_bytes(out, &self.username);
        let caps = self.capabilities;
        if caps & CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA != 0 {
            put_lenenc_bytes(out, &self.auth_response);
        } else if caps & CLIENT_SECURE_CONNECTION != 0 {
            let n = self.auth_response.len().min(255);
            out.put_u8(n as u8);
            out.put_slice(&self.auth_response[..n]);
        } else {
            put_nul_bytes(out, &self.auth_response);
        }
        if caps & CLIENT_CONNECT_WITH_DB != 0 {
            put_nul_bytes(out, self.database.as_deref().unwrap_or_default());
        }
        if caps & CLIENT_PLUGIN_AUTH != 0 {
            put_nul_bytes(out, self.auth_plugin_name.as_deref().unwrap_or_default());
        }
        if caps & CLIENT_CONNECT_ATTRS != 0 {
            encode_attrs(&self.connect_attrs, out);
        }
    }
}

/// Reads connection attributes: a length-encoded total, then length-encoded key/value pairs.
pub(crate) fn decode_attrs(r: &mut Reader) -> Result<Vec<(Bytes, Bytes)>> {
    let block = r.lenenc_bytes("connect attrs")?;
    let mut ar = Reader::new(block);
    let mut attrs = Vec::new();
    while !ar.is_empty() {
        let k = ar.lenenc_bytes("attr key")?;
        let v = ar.lenenc_bytes("attr value")?;
        attrs.push((k, v));
    }
    Ok(attrs)
}

/// Writes connection attributes in the layout [`decode_attrs`] reads.
pub(crate) fn encode_attrs(attrs: &[(Bytes, Bytes)], out: &mut BytesMut) {
    let mut block = BytesMut::new();
    for (k, v) in attrs {
        put_lenenc_bytes(&mut block, k);
        put_lenenc_bytes(&mut block, v);
    }
    put_lenenc_int(out, block.len() as u64);
    out.put_slice(&block);
}

/// Server asks the client to restart authentication with another plugin (header 0xFE).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthSwitchRequest {
    /// Plugin to switch to.
    pub plugin_name: Bytes,
    /// Plugin data (for the password plugins: a 20-byte nonce followed by a NUL).
    pub plugin_data: Bytes,
}

impl AuthSwitchRequest {
    /// Parses the payload (client side).
    pub fn decode(payload: Bytes) -> Result<Self> {
        let mut r = Reader::new(payload);
        let h = r.u8("header")?;
        if h != 0xFE {
            return Err(MysqlError::UnexpectedHeader {
                header: h,
                what: "AuthSwitchRequest",
            });
        }
        let plugin_name = r.nul_or_eof_bytes("plugin name")?;
        Ok(AuthSwitchRequest {
            plugin_name,
            plugin_data: r.rest(),
        })
    }

    /// The nonce without its trailing NUL.
    pub fn scramble(&self) -> &[u8] {
        let d = &self.plugin_data[..];
        d.strip_suffix(&[0]).unwrap_or(d)
    }

    /// Appends the payload (server side).
    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u8(0xFE);
        put_nul_bytes(out, &self.plugin_name);
        out.put_slice(&self.plugin_data);
    }
}

/// Extra authentication data from the server (header 0x01), e.g. the caching_sha2 markers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthMoreData {
    /// The data after the header.
    pub data: Bytes,
}

impl AuthMoreData {
    /// Parses the payload.
    pub fn decode(payload: Bytes) -> Result<Self> {
        let mut r = Reader::new(payload);
        let h = r.u8("header")?;
        if h != 0x01 {
            return Err(MysqlError::UnexpectedHeader {
                header: h,
                what: "AuthMoreData",
            });
        }
        Ok(AuthMoreData { data: r.rest() })
    }

    /// Appends the payload.
    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u8(0x01);
        out.put_slice(&self.data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_v10_round_trip_exact() {
        let hs = HandshakeV10::new(
            "10.11.6-furrow",
            7,
            *b"abcdefghijklmnopqrst",
            0xF7FE_F7FE & !CLIENT_SSL,
            45,
            2,
            "mysql_native_password",
        );
        let mut out = BytesMut::new();
        hs.encode(&mut out);
        assert_eq!(out[0], 10);
        assert_eq!(&out[1..15], b"10.11.6-furrow");
        let back = HandshakeV10::decode(out.clone().freeze()).unwrap();
        assert_eq!(back, hs);
        assert_eq!(back.scramble(), b"abcdefghijklmnopqrst");
        let mut again = BytesMut::new();
        back.encode(&mut again);
        assert_eq!(again, out);
    }

    #[test]
    fn client_login_verifies_server_side() {
        let caps = 0xF7FF_F7FF & !CLIENT_SSL;
        let hs = HandshakeV10::new(
            "v",
            1,
            *b"abcdefghijklmnopqrst",
            caps,
            45,
            2,
            "mysql_native_password",
        );
        let resp =
            HandshakeResponse41::for_server(&hs, "app", b"pw", Some("db"), DEFAULT_CLIENT, 45);
        let mut out = BytesMut::new();
        resp.encode(&mut out);
        let ClientHandshake::Response(got) = ClientHandshake::decode(out.freeze()).unwrap() else {
            panic!("expected response")
        };
        assert_eq!(got.database.as_deref(), Some(&b"db"[..]));
        let stored = crate::mysql::auth::native_password_hash(b"pw");
        assert!(crate::mysql::auth::verify_native_password(
            &got.auth_response,
            hs.scramble(),
            &stored
        ));
    }

    #[test]
    fn response_round_trip_and_ssl() {
        let resp = HandshakeResponse41 {
            capabilities: DEFAULT_CLIENT | CLIENT_CONNECT_WITH_DB,
            max_packet_size: 1 << 24,
            charset: 45,
            mariadb_capabilities: 0,
            username: Bytes::from_static(b"app"),
            auth_response: Bytes::from_static(&[1; 20]),
            database: Some(Bytes::from_static(b"shop")),
            auth_plugin_name: Some(Bytes::from_static(b"mysql_native_password")),
            connect_attrs: vec![(
                Bytes::from_static(b"_client_name"),
                Bytes::from_static(b"furrow"),
            )],
        };
        let mut out = BytesMut::new();
        resp.encode(&mut out);
        let ClientHandshake::Response(back) =
            ClientHandshake::decode(out.clone().freeze()).unwrap()
        else {
            panic!("expected response")
        };
        assert_eq!(back, resp);
        let mut ssl = BytesMut::new();
        SslRequest {
            capabilities: CLIENT_SSL | CLIENT_PROTOCOL_41,
            max_packet_size: 0,
            charset: 33,
            mariadb_capabilities: 0,
        }
        .encode(&mut ssl);
        assert!(matches!(
            ClientHandshake::decode(ssl.freeze()).unwrap(),
            ClientHandshake::Ssl(_)
        ));
        // Exact bytes of an SSL request (as libmariadb sends it: 32 bytes, CLIENT_SSL set), then a
        // 32-byte payload without CLIENT_SSL, which is neither a request nor a valid response.
        let mut wire = vec![0u8; 32];
        wire[..4]
            .copy_from_slice(&(CLIENT_SSL | CLIENT_PROTOCOL_41 | CLIENT_PLUGIN_AUTH).to_le_bytes());
        wire[4..8].copy_from_slice(&(1u32 << 24).to_le_bytes());
        wire[8] = 45;
        wire[28..].copy_from_slice(&7u32.to_le_bytes());
        let Ok(ClientHandshake::Ssl(req)) = ClientHandshake::decode(Bytes::from(wire.clone()))
        else {
            panic!("expected an SSL request")
        };
        assert_eq!(req.capabilities & CLIENT_SSL, CLIENT_SSL);
        assert_eq!(
            (req.max_packet_size, req.charset, req.mariadb_capabilities),
            (1 << 24, 45, 7)
        );
        let mut again = BytesMut::new();
        req.encode(&mut again);
        assert_eq!(&again[..], &wire[..]);
        wire[1] &= !((CLIENT_SSL >> 8) as u8);
        assert!(ClientHandshake::decode(Bytes::from(wire)).is_err());
        // Truncated responses are errors, not panics.
        for cut in 0..out.len() {
            let _ = HandshakeResponse41::decode(out.clone().freeze().slice(..cut));
        }
    }
}
