//! API tokens: hashing and generation; console passwords: salted PBKDF2 hashes.

use sha2::{Digest, Sha256};

/// The hex SHA-256 of a token (tokens are stored hashed).
pub fn hash_token(token: &str) -> String {
    let d = Sha256::digest(token.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// A new random token (`fw_` and 32 hex digits from the OS random source).
pub fn new_token() -> std::io::Result<String> {
    use std::io::Read;
    let mut buf = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(format!(
        "fw_{}",
        buf.iter().map(|b| format!("{b:02x}")).collect::<String>()
    ))
}

/// PBKDF2-HMAC-SHA256 rounds for console passwords (OWASP's 2023 figure is 600,000; this keeps a login
/// at ~0.1 s of one core in release builds — logins are rare, and the store only ever sees the hash).
pub const PASSWORD_ROUNDS: u32 = 200_000;
/// Shortest console password accepted.
pub const MIN_PASSWORD_LEN: usize = 8;
/// Longest console password accepted (bytes).
pub const MAX_PASSWORD_LEN: usize = 1024;

/// A console password's stored form: `pbkdf2-sha256$ROUNDS$SALT_HEX$HASH_HEX` (16-byte random salt).
pub fn hash_password(password: &str) -> std::io::Result<String> {
    use std::io::Read;
    let mut salt = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut salt)?;
    Ok(hash_with(password, &salt, PASSWORD_ROUNDS))
}

fn hash_with(password: &str, salt: &[u8], rounds: u32) -> String {
    let mut out = [0u8; 32];
    let n = std::num::NonZeroU32::new(rounds.max(1)).unwrap_or(std::num::NonZeroU32::MIN);
    ring::pbkdf2::derive(
        ring::pbkdf2::PBKDF2_HMAC_SHA256,
        n,
        salt,
        password.as_bytes(),
        &mut out,
    );
    format!("pbkdf2-sha256${rounds}${}${}", hex(salt), hex(&out))
}

/// Lower-case hex of `b` (password hashes here, secret keys in `crate::secret`).
pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of an even-length hex string; None for anything else.
pub(crate) fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Whether `password` matches a stored [`hash_password`] form (compared in constant time; a malformed
/// stored value never matches).
pub fn verify_password(password: &str, stored: &str) -> bool {
    let mut parts = stored.split('$');
    let (Some("pbkdf2-sha256"), Some(rounds), Some(salt), Some(hash), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return false;
    };
    let (Some(rounds), Some(salt), Some(hash)) = (
        rounds
            .parse::<u32>()
            .ok()
            .and_then(std::num::NonZeroU32::new),
        unhex(salt),
        unhex(hash),
    ) else {
        return false;
    };
    ring::pbkdf2::verify(
        ring::pbkdf2::PBKDF2_HMAC_SHA256,
        rounds,
        &salt,
        password.as_bytes(),
        &hash,
    )
    .is_ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_verify_only_themselves() {
        let h = super::hash_with("correct horse", b"0123456789abcdef", 1000);
        assert!(super::verify_password("correct horse", &h));
        assert!(!super::verify_password("correct horsf", &h));
        assert!(!super::verify_password("", &h));
        for bad in [
            "",
            "pbkdf2-sha256$0$00$00",
            "md5$1$00$00",
            "pbkdf2-sha256$x$zz$00",
            "a$b$c$d$e",
        ] {
            assert!(!super::verify_password("x", bad), "{bad}");
        }
        let salted = super::hash_password("correct horse").unwrap();
        assert_ne!(
            salted,
            super::hash_password("correct horse").unwrap(),
            "salted"
        );
        assert!(super::verify_password("correct horse", &salted));
    }

    #[test]
    fn tokens_hash_and_differ() {
        let a = super::new_token().unwrap();
        let b = super::new_token().unwrap();
        assert_ne!(a, b);
        assert_eq!(super::hash_token(&a).len(), 64);
        assert_eq!(super::hash_token(&a), super::hash_token(&a));
    }
}
