//! Secret items at rest: AES-256-GCM (ring) with keys the center holds, applied at the store boundary.
//!
//! In memory every item is in clear (the center must serve it); [`SealingStore`] seals the value of every
//! secret item on its way into the store and opens it on its way out, so the database, its backups and its
//! replicas only ever hold ciphertext. A sealed item keeps its key, type-independent metadata and version; its
//! value becomes `"******"` and `sealed` holds `fw1:KEYID:NONCE:CIPHERTEXT` (hex), with the item key as
//! associated data (a ciphertext moved to another key does not open).
//!
//! Keys come from a key file (`--secret-key-file`): one `ID:HEX` line per key (`HEX` = 32 random bytes, e.g.
//! `openssl rand -hex 32`), `#` comments allowed. The first key seals; all of them open. Rotation: put the new
//! key first, keep the old one below it, restart every node, call `POST /v1/secrets/reseal` (re-seals every
//! stored secret under the first key), then drop the old line and restart again.

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

use crate::auth::{hex, unhex};
use crate::error::{ControlError, ErrorCode, Result};
use crate::model::{Item, Value};
use crate::state::{Change, Rec};
use crate::store::Store;

/// The keys a center seals and opens secret items with; the first one seals.
pub struct Keyring {
    keys: Vec<(String, LessSafeKey)>,
    rng: SystemRandom,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|(id, _)| id.as_str()).collect();
        f.debug_struct("Keyring").field("ids", &ids).finish()
    }
}

fn bad_key(msg: impl Into<String>) -> ControlError {
    ControlError::bad("secret_key", msg)
}

impl Keyring {
    /// Parses a key file: `ID:HEX` lines (64 hex digits), first = sealing key.
    pub fn parse(text: &str) -> Result<Keyring> {
        let mut keys = Vec::new();
        for (no, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (id, h) = line
                .split_once(':')
                .ok_or_else(|| bad_key(format!("line {}: expected ID:HEX", no + 1)))?;
            crate::model::check_name("secret_key", id)?;
            let raw = unhex(h.trim()).filter(|k| k.len() == 32).ok_or_else(|| {
                bad_key(format!("line {}: the key must be 64 hex digits", no + 1))
            })?;
            let key = UnboundKey::new(&AES_256_GCM, &raw)
                .map_err(|_| bad_key(format!("line {}: unusable key", no + 1)))?;
            if keys.iter().any(|(k, _)| k == id) {
                return Err(bad_key(format!("line {}: duplicate key id {id:?}", no + 1)));
            }
            keys.push((id.to_string(), LessSafeKey::new(key)));
        }
        if keys.is_empty() {
            return Err(bad_key("the key file holds no key"));
        }
        Ok(Keyring {
            keys,
            rng: SystemRandom::new(),
        })
    }

    /// Reads a key file.
    pub fn load(path: &std::path::Path) -> Result<Keyring> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| bad_key(format!("{}: {e}", path.display())))?;
        Keyring::parse(&text)
    }

    /// The id of the sealing key.
    pub fn current(&self) -> &str {
        &self.keys[0].0
    }

    /// Seals `plain` bound to `aad` under the first key.
    pub fn seal(&self, aad: &str, plain: &[u8]) -> Result<String> {
        let (id, key) = &self.keys[0];
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .map_err(|_| ControlError::new(ErrorCode::Internal, "no random nonce"))?;
        let mut buf = plain.to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad.as_bytes()),
            &mut buf,
        )
        .map_err(|_| ControlError::new(ErrorCode::Internal, "sealing failed"))?;
        Ok(format!("fw1:{id}:{}:{}", hex(&nonce), hex(&buf)))
    }

    /// Opens what [`Keyring::seal`] produced with the same `aad`.
    pub fn open(&self, aad: &str, sealed: &str) -> Result<Vec<u8>> {
        let corrupt = || {
            ControlError::new(
                ErrorCode::Internal,
                format!("secret of {aad:?}: not a sealed value"),
            )
        };
        let mut parts = sealed.splitn(4, ':');
        let (Some("fw1"), Some(id), Some(nonce), Some(ct)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(corrupt());
        };
        let (_, key) = self.keys.iter().find(|(k, _)| k == id).ok_or_else(|| {
            ControlError::new(
                ErrorCode::Internal,
                format!(
                    "secret of {aad:?} is sealed with key {id:?}, which the key file does not hold"
                ),
            )
        })?;
        let nonce: [u8; NONCE_LEN] = unhex(nonce)
            .and_then(|n| n.try_into().ok())
            .ok_or_else(corrupt)?;
        let mut buf = unhex(ct).ok_or_else(corrupt)?;
        let plain = key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad.as_bytes()),
                &mut buf,
            )
            .map_err(|_| {
                ControlError::new(
                    ErrorCode::Internal,
                    format!(
                        "secret of {aad:?} does not open with key {id:?} (wrong key or tampered)"
                    ),
                )
            })?;
        Ok(plain.to_vec())
    }

    fn seal_item(&self, item: &mut Item) -> Result<()> {
        if !item.secret || item.sealed.is_some() {
            return Ok(());
        }
        let plain = serde_json::to_vec(&item.value)
            .map_err(|e| ControlError::new(ErrorCode::Internal, e.to_string()))?;
        item.sealed = Some(self.seal(&item.key, &plain)?);
        item.value = Value::String("******".into());
        Ok(())
    }

    fn open_item(&self, item: &mut Item) -> Result<()> {
        let Some(sealed) = item.sealed.take() else {
            return Ok(());
        };
        let plain = self.open(&item.key, &sealed)?;
        item.value = serde_json::from_slice(&plain).map_err(|e| {
            ControlError::new(
                ErrorCode::Internal,
                format!("secret of {:?}: {e}", item.key),
            )
        })?;
        Ok(())
    }

    fn each_item(rec: &mut Rec, mut f: impl FnMut(&mut Item) -> Result<()>) -> Result<()> {
        match rec {
            Rec::Item { item, .. } => f(item),
            Rec::Release(r) => r.items.values_mut().try_for_each(f),
            Rec::Scheduled(s) => s.items.values_mut().try_for_each(f),
            _ => Ok(()),
        }
    }

    /// Seals every secret item of a record.
    pub fn seal_rec(&self, rec: &mut Rec) -> Result<()> {
        Self::each_item(rec, |i| self.seal_item(i))
    }

    /// Opens every sealed item of a record.
    pub fn open_rec(&self, rec: &mut Rec) -> Result<()> {
        Self::each_item(rec, |i| self.open_item(i))
    }
}

/// Whether a record holds a sealed item (a store without keys refuses to load it).
pub fn has_sealed(rec: &Rec) -> bool {
    let mut found = false;
    let _ = Keyring::each_item(&mut rec.clone(), |i| {
        found |= i.sealed.is_some();
        Ok(())
    });
    found
}

/// A store that seals secret items on commit and opens them on load. Without keys it passes commits through
/// (the center then refuses secret items) and refuses to load a sealed item instead of serving its
/// placeholder.
pub struct SealingStore {
    inner: Box<dyn Store>,
    keys: Option<std::sync::Arc<Keyring>>,
}

impl SealingStore {
    /// Wraps `inner`.
    pub fn new(inner: Box<dyn Store>, keys: Option<std::sync::Arc<Keyring>>) -> Self {
        SealingStore { inner, keys }
    }

    fn open_rec(&self, rec: &mut Rec) -> Result<()> {
        match &self.keys {
            Some(k) => k.open_rec(rec),
            None if has_sealed(rec) => Err(ControlError::new(
                ErrorCode::Internal,
                format!(
                    "record {}/{} holds an encrypted secret: start the center with --secret-key-file",
                    rec.kind(),
                    rec.key()
                ),
            )),
            None => Ok(()),
        }
    }

    fn open_changes(&self, changes: Vec<Change>) -> Result<Vec<Change>> {
        changes
            .into_iter()
            .map(|c| match c {
                Change::Put(mut rec) => {
                    self.open_rec(&mut rec)?;
                    Ok(Change::Put(rec))
                }
                d => Ok(d),
            })
            .collect()
    }
}

impl Store for SealingStore {
    fn load(&self) -> Result<(u64, Vec<Rec>)> {
        let (rev, mut recs) = self.inner.load()?;
        for r in &mut recs {
            self.open_rec(r)?;
        }
        Ok((rev, recs))
    }

    fn commit(&self, base: u64, changes: &[Change]) -> Result<u64> {
        let Some(keys) = &self.keys else {
            return self.inner.commit(base, changes);
        };
        let mut sealed = Vec::with_capacity(changes.len());
        for c in changes {
            sealed.push(match c {
                Change::Put(rec) => {
                    let mut rec = rec.clone();
                    keys.seal_rec(&mut rec)?;
                    Change::Put(rec)
                }
                d => d.clone(),
            });
        }
        self.inner.commit(base, &sealed)
    }

    fn changes_since(&self, rev: u64) -> Result<(u64, Vec<Change>)> {
        let (rev, changes) = self.inner.changes_since(rev)?;
        Ok((rev, self.open_changes(changes)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "k1:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const K2: &str = "k2:1f1e1d1c1b1a191817161514131211100f0e0d0c0b0a09080706050403020100";

    #[test]
    fn seal_open_rotate_and_refuse_tampering() {
        let one = Keyring::parse(K1).unwrap();
        let s = one.seal("db.password", b"hunter2").unwrap();
        assert!(s.starts_with("fw1:k1:") && !s.contains("hunter2"));
        assert_eq!(one.open("db.password", &s).unwrap(), b"hunter2");
        assert_ne!(
            s,
            one.seal("db.password", b"hunter2").unwrap(),
            "fresh nonce per seal"
        );
        // Bound to the item key.
        assert!(one.open("other", &s).is_err());
        // Tampered ciphertext.
        let mut t = s.clone().into_bytes();
        let last = t.len() - 1;
        t[last] = if t[last] == b'0' { b'1' } else { b'0' };
        assert!(
            one.open("db.password", &String::from_utf8(t).unwrap())
                .is_err()
        );
        // Rotation: the new key seals, the old one still opens.
        let both = Keyring::parse(&format!("# rotated\n{K2}\n{K1}\n")).unwrap();
        assert_eq!(both.current(), "k2");
        assert_eq!(both.open("db.password", &s).unwrap(), b"hunter2");
        assert!(both.seal("x", b"y").unwrap().starts_with("fw1:k2:"));
        let only_new = Keyring::parse(K2).unwrap();
        assert!(
            only_new
                .open("db.password", &s)
                .unwrap_err()
                .message
                .contains("k1")
        );
        // Bad files.
        assert!(Keyring::parse("").is_err());
        assert!(Keyring::parse("k:00").is_err());
        assert!(Keyring::parse(&format!("{K1}\n{K1}")).is_err());
    }
}
