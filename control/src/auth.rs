//! API tokens: hashing and generation.

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

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_hash_and_differ() {
        let a = super::new_token().unwrap();
        let b = super::new_token().unwrap();
        assert_ne!(a, b);
        assert_eq!(super::hash_token(&a).len(), 64);
        assert_eq!(super::hash_token(&a), super::hash_token(&a));
    }
}
