//! Password scrambles for `mysql_native_password` and `caching_sha2_password`, on both sides:
//! the client computing a response from a password and the server verifying a response against a
//! stored hash (never the plaintext).
//!
//! `caching_sha2_password` full path: when the server has no cached entry it sends
//! [`AuthMoreData`](super::AuthMoreData) `[PERFORM_FULL_AUTHENTICATION]`; over TLS the client
//! replies with the cleartext password and a NUL ([`cleartext_password_payload`]); without TLS it
//! sends [`REQUEST_PUBLIC_KEY`], the server answers with its PEM key in AuthMoreData, and the
//! client sends `RSA-OAEP(password\0 XOR scramble)` ([`xor_password_with_scramble`] is the
//! pre-encryption step; RSA itself is out of scope for this pure crate).

use sha1::{Digest, Sha1};
use sha2::Sha256;

/// AuthMoreData byte: caching_sha2 fast path succeeded (an OK follows).
pub const FAST_AUTH_SUCCESS: u8 = 0x03;
/// AuthMoreData byte: caching_sha2 needs the full authentication exchange.
pub const PERFORM_FULL_AUTHENTICATION: u8 = 0x04;
/// Client byte asking the server for its RSA public key (caching_sha2 without TLS).
pub const REQUEST_PUBLIC_KEY: u8 = 0x02;

/// `SHA1(SHA1(password))`: what MySQL stores for native-password accounts (the hex of it, with a
/// leading `*`, is `mysql.user.authentication_string`).
pub fn native_password_hash(password: &[u8]) -> [u8; 20] {
    let stage1: [u8; 20] = Sha1::digest(password).into();
    Sha1::digest(stage1).into()
}

/// Parses a stored `*<40 hex>` native-password hash.
pub fn parse_native_password_hash(s: &str) -> Option<[u8; 20]> {
    let hex = s.strip_prefix('*').unwrap_or(s);
    if hex.len() != 40 {
        return None;
    }
    let mut out = [0u8; 20];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Formats a native-password hash the way `PASSWORD()` does (`*` + 40 upper-case hex digits).
pub fn format_native_password_hash(hash: &[u8; 20]) -> String {
    let mut s = String::with_capacity(41);
    s.push('*');
    for b in hash {
        s.push_str(&format!("{b:02X}"));
    }
    s
}

/// Client side: `SHA1(pw) XOR SHA1(scramble + SHA1(SHA1(pw)))`; empty for an empty password.
pub fn native_password_scramble(password: &[u8], scramble: &[u8]) -> Vec<u8> {
    if password.is_empty() {
        return Vec::new();
    }
    let stage1: [u8; 20] = Sha1::digest(password).into();
    let stage2: [u8; 20] = Sha1::digest(stage1).into();
    let mut h = Sha1::new();
    h.update(scramble);
    h.update(stage2);
    let mix: [u8; 20] = h.finalize().into();
    stage1.iter().zip(mix).map(|(a, b)| a ^ b).collect()
}

/// Server side: checks a client's native-password response against the stored
/// `SHA1(SHA1(pw))`. Recovers the candidate `SHA1(pw)` and hashes it once more.
pub fn verify_native_password(response: &[u8], scramble: &[u8], stored_hash: &[u8; 20]) -> bool {
    if response.len() != 20 {
        return false;
    }
    let mut h = Sha1::new();
    h.update(scramble);
    h.update(stored_hash);
    let mix: [u8; 20] = h.finalize().into();
    let mut candidate = [0u8; 20];
    for i in 0..20 {
        candidate[i] = response[i] ^ mix[i];
    }
    let check: [u8; 20] = Sha1::digest(candidate).into();
    constant_time_eq(&check, stored_hash)
}

/// `SHA256(SHA256(password))`: what a caching_sha2 server keeps in its fast-path cache.
pub fn caching_sha2_hash(password: &[u8]) -> [u8; 32] {
    let stage1: [u8; 32] = Sha256::digest(password).into();
    Sha256::digest(stage1).into()
}

/// Client side fast path: `SHA256(pw) XOR SHA256(SHA256(SHA256(pw)) + scramble)`; empty for an
/// empty password.
pub fn caching_sha2_scramble(password: &[u8], scramble: &[u8]) -> Vec<u8> {
    if password.is_empty() {
        return Vec::new();
    }
    let stage1: [u8; 32] = Sha256::digest(password).into();
    let stage2: [u8; 32] = Sha256::digest(stage1).into();
    let mut h = Sha256::new();
    h.update(stage2);
    h.update(scramble);
    let mix: [u8; 32] = h.finalize().into();
    stage1.iter().zip(mix).map(|(a, b)| a ^ b).collect()
}

/// Server side fast path: checks a caching_sha2 response against the cached
/// `SHA256(SHA256(pw))`.
pub fn verify_caching_sha2(response: &[u8], scramble: &[u8], cached_hash: &[u8; 32]) -> bool {
    if response.len() != 32 {
        return false;
    }
    let mut h = Sha256::new();
    h.update(cached_hash);
    h.update(scramble);
    let mix: [u8; 32] = h.finalize().into();
    let mut candidate = [0u8; 32];
    for i in 0..32 {
        candidate[i] = response[i] ^ mix[i];
    }
    let check: [u8; 32] = Sha256::digest(candidate).into();
    constant_time_eq(&check, cached_hash)
}

/// The caching_sha2 full-path reply over TLS: the password followed by a NUL.
pub fn cleartext_password_payload(password: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(password.len() + 1);
    v.extend_from_slice(password);
    v.push(0);
    v
}

/// The caching_sha2 full-path RSA plaintext: `password\0` XOR the scramble (repeated).
pub fn xor_password_with_scramble(password: &[u8], scramble: &[u8]) -> Vec<u8> {
    let mut v = cleartext_password_payload(password);
    if !scramble.is_empty() {
        for (i, b) in v.iter_mut().enumerate() {
            *b ^= scramble[i % scramble.len()];
        }
    }
    v
}

/// The password plugins Furrow speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthPlugin {
    /// `mysql_native_password` (SHA1 scramble).
    NativePassword,
    /// `caching_sha2_password` (SHA256 scramble, full path over TLS/RSA).
    CachingSha2Password,
    /// `mysql_clear_password` (password + NUL, only over TLS).
    ClearPassword,
}

impl AuthPlugin {
    /// Recognises a plugin name from a handshake or auth switch.
    pub fn from_name(name: &[u8]) -> Option<Self> {
        match name {
            b"mysql_native_password" => Some(AuthPlugin::NativePassword),
            b"caching_sha2_password" => Some(AuthPlugin::CachingSha2Password),
            b"mysql_clear_password" => Some(AuthPlugin::ClearPassword),
            _ => None,
        }
    }

    /// The plugin's wire name.
    pub fn name(self) -> &'static str {
        match self {
            AuthPlugin::NativePassword => super::consts::plugin::NATIVE_PASSWORD,
            AuthPlugin::CachingSha2Password => super::consts::plugin::CACHING_SHA2_PASSWORD,
            AuthPlugin::ClearPassword => super::consts::plugin::CLEAR_PASSWORD,
        }
    }

    /// Client side: the auth response for `password` and the server's nonce.
    pub fn scramble(self, password: &[u8], nonce: &[u8]) -> Vec<u8> {
        match self {
            AuthPlugin::NativePassword => native_password_scramble(password, nonce),
            AuthPlugin::CachingSha2Password => caching_sha2_scramble(password, nonce),
            AuthPlugin::ClearPassword => cleartext_password_payload(password),
        }
    }
}

/// What a caching_sha2 client does with an AuthMoreData payload (the bytes after 0x01).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CachingSha2Action {
    /// Fast path succeeded: read the OK that follows.
    AwaitOk,
    /// Full authentication over TLS: send these bytes (password + NUL).
    SendCleartext(Vec<u8>),
    /// Full authentication without TLS: send `[REQUEST_PUBLIC_KEY]` to get the server's key.
    RequestPublicKey,
    /// The server's PEM public key arrived: send
    /// `RSA-OAEP(xor_password_with_scramble(password, nonce))` (RSA is not done by this crate).
    EncryptWithPublicKey(Vec<u8>),
}

/// Client side of caching_sha2 after the fast-path response was sent.
pub fn caching_sha2_client_step(more_data: &[u8], tls: bool, password: &[u8]) -> CachingSha2Action {
    match more_data {
        [FAST_AUTH_SUCCESS] => CachingSha2Action::AwaitOk,
        [PERFORM_FULL_AUTHENTICATION] if tls => {
            CachingSha2Action::SendCleartext(cleartext_password_payload(password))
        }
        [PERFORM_FULL_AUTHENTICATION] => CachingSha2Action::RequestPublicKey,
        pem => CachingSha2Action::EncryptWithPublicKey(pem.to_vec()),
    }
}

/// Server side of the caching_sha2 full path over TLS: checks a cleartext password (with or
/// without its trailing NUL) against the cached `SHA256(SHA256(pw))`.
pub fn verify_caching_sha2_cleartext(cleartext: &[u8], cached_hash: &[u8; 32]) -> bool {
    let pw = cleartext.strip_suffix(&[0]).unwrap_or(cleartext);
    constant_time_eq(&caching_sha2_hash(pw), cached_hash)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_hash_matches_mysql_password_function() {
        // SELECT PASSWORD('password') on MySQL 5.7 / MariaDB.
        assert_eq!(
            format_native_password_hash(&native_password_hash(b"password")),
            "*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19"
        );
        let parsed =
            parse_native_password_hash("*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19").unwrap();
        assert_eq!(parsed, native_password_hash(b"password"));
        assert_eq!(parse_native_password_hash("*12"), None);
    }

    #[test]
    fn native_verify_accepts_right_and_rejects_wrong() {
        let nonce = *b"0123456789abcdefghij";
        let stored = native_password_hash(b"s3cret");
        let resp = native_password_scramble(b"s3cret", &nonce);
        assert_eq!(resp.len(), 20);
        assert!(verify_native_password(&resp, &nonce, &stored));
        assert!(!verify_native_password(
            &native_password_scramble(b"s3creT", &nonce),
            &nonce,
            &stored
        ));
        assert!(!verify_native_password(
            &resp,
            b"0123456789abcdefghiJ",
            &stored
        ));
        assert!(native_password_scramble(b"", &nonce).is_empty());
    }

    #[test]
    fn caching_sha2_verify() {
        let nonce = *b"ABCDEFGHIJKLMNOPQRST";
        let cached = caching_sha2_hash(b"pw");
        let resp = caching_sha2_scramble(b"pw", &nonce);
        assert_eq!(resp.len(), 32);
        assert!(verify_caching_sha2(&resp, &nonce, &cached));
        assert!(!verify_caching_sha2(
            &caching_sha2_scramble(b"pX", &nonce),
            &nonce,
            &cached
        ));
        assert_eq!(
            xor_password_with_scramble(b"ab", &[1, 2]),
            vec![b'a' ^ 1, b'b' ^ 2, 1]
        );
        assert!(verify_caching_sha2_cleartext(b"pw\0", &cached));
        assert!(!verify_caching_sha2_cleartext(b"px\0", &cached));
    }

    #[test]
    fn caching_sha2_client_steps() {
        assert_eq!(
            caching_sha2_client_step(&[FAST_AUTH_SUCCESS], false, b"pw"),
            CachingSha2Action::AwaitOk
        );
        assert_eq!(
            caching_sha2_client_step(&[PERFORM_FULL_AUTHENTICATION], true, b"pw"),
            CachingSha2Action::SendCleartext(b"pw\0".to_vec())
        );
        assert_eq!(
            caching_sha2_client_step(&[PERFORM_FULL_AUTHENTICATION], false, b"pw"),
            CachingSha2Action::RequestPublicKey
        );
        assert!(matches!(
            caching_sha2_client_step(b"-----BEGIN PUBLIC KEY-----", false, b"pw"),
            CachingSha2Action::EncryptWithPublicKey(_)
        ));
        let plugin = AuthPlugin::from_name(b"caching_sha2_password").unwrap();
        assert_eq!(plugin.name(), "caching_sha2_password");
        assert_eq!(
            plugin.scramble(b"pw", b"n"),
            caching_sha2_scramble(b"pw", b"n")
        );
        assert_eq!(AuthPlugin::from_name(b"ed25519"), None);
    }
}
