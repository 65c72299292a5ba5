//! Encryption of archived dead letters' fields: AES-256-GCM with the configured key
//! (`archive.encryption_key_file` / `archive.encryption_key_env`), a fresh random 96-bit nonce
//! per entry, and the entry's tenant and dead-letter id as associated data, so a ciphertext
//! moved to another entry does not decrypt. The key never leaves this type: its `Debug` says
//! `***`, and errors name the setting, never the value.
//!
//! ring's AEAD does the work: it is already built for rustls (no new crate, no C toolchain of
//! its own beyond what ring needs), constant-time, with AES-NI/CLMUL where the CPU has them.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};

/// A 256-bit key for the archive's payloads.
#[derive(Clone)]
pub struct ArchiveKey {
    bytes: [u8; 32],
    /// The first 8 bytes of the key's SHA-256, hex: written in manifests and entries so a
    /// restore with another key says so instead of failing to decrypt blindly.
    id: String,
}

impl std::fmt::Debug for ArchiveKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ArchiveKey(id {}, ***)", self.id)
    }
}

impl PartialEq for ArchiveKey {
    fn eq(&self, other: &ArchiveKey) -> bool {
        // Constant time: every byte is compared whatever the first difference.
        self.bytes
            .iter()
            .zip(other.bytes.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

impl ArchiveKey {
    /// A key from its text: 64 hexadecimal digits (surrounding white space ignored). The error
    /// says what is wrong with the text's shape, never the text.
    pub fn from_hex(text: &str) -> Result<ArchiveKey, String> {
        let t = text.trim();
        if t.len() != 64 {
            return Err(format!(
                "the key must be 64 hexadecimal digits (32 bytes), not {} characters",
                t.chars().count()
            ));
        }
        let mut bytes = [0u8; 32];
        for (i, pair) in t.as_bytes().chunks(2).enumerate() {
            let hi = hex_digit(pair[0]);
            let lo = hex_digit(pair[1]);
            match (hi, lo) {
                (Some(h), Some(l)) => bytes[i] = h << 4 | l,
                _ => return Err("the key must be 64 hexadecimal digits (0-9, a-f)".into()),
            }
        }
        Ok(ArchiveKey::from_bytes(bytes))
    }

    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> ArchiveKey {
        let digest = Sha256::digest(bytes);
        let id = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        ArchiveKey { bytes, id }
    }

    /// The key's public id (see the field).
    pub fn id(&self) -> &str {
        &self.id
    }

    fn sealing(&self) -> Result<LessSafeKey, String> {
        UnboundKey::new(&AES_256_GCM, &self.bytes)
            .map(LessSafeKey::new)
            .map_err(|_| "the archive key is not a valid AES-256 key".to_owned())
    }

    /// Encrypts `plain` for the entry named by `aad`: nonce followed by ciphertext and tag.
    pub fn seal(&self, plain: &[u8], aad: &[u8]) -> Result<Vec<u8>, String> {
        let key = self.sealing()?;
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| "the system random generator failed".to_owned())?;
        let mut out = plain.to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut out,
        )
        .map_err(|_| "encryption failed".to_owned())?;
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&out);
        Ok(sealed)
    }

    /// Decrypts what [`seal`](Self::seal) made for the same `aad`; an error when the key or
    /// the entry differs, or the text was changed.
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, String> {
        if sealed.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return Err("the encrypted fields are too short".into());
        }
        let key = self.sealing()?;
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce)
            .map_err(|_| "the encrypted fields carry no valid nonce".to_owned())?;
        let mut buf = body.to_vec();
        let plain = key
            .open_in_place(nonce, Aad::from(aad), &mut buf)
            .map_err(|_| {
                "the encrypted fields do not decrypt with the configured key (another key, or \
                 the object was changed)"
                    .to_owned()
            })?;
        Ok(plain.to_vec())
    }
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn sealed_fields_open_only_with_the_same_key_and_entry() {
        let key = ArchiveKey::from_hex(HEX).unwrap();
        let plain = b"{\"payload\":\"secret \xff bytes\"}";
        let sealed = key.seal(plain, b"acme/1-0").unwrap();
        assert_ne!(&sealed[12..sealed.len() - 16], plain.as_slice());
        assert_eq!(key.open(&sealed, b"acme/1-0").unwrap(), plain);
        // Another entry, another key, a flipped bit: refused.
        assert!(key.open(&sealed, b"acme/2-0").is_err());
        let other = ArchiveKey::from_bytes([7; 32]);
        assert!(other.open(&sealed, b"acme/1-0").is_err());
        let mut bent = sealed.clone();
        bent[20] ^= 1;
        assert!(key.open(&bent, b"acme/1-0").is_err());
        // Two seals of the same text differ (fresh nonces).
        assert_ne!(
            key.seal(plain, b"a").unwrap(),
            key.seal(plain, b"a").unwrap()
        );
    }

    #[test]
    fn keys_are_never_shown_and_bad_text_is_refused_without_echo() {
        let key = ArchiveKey::from_hex(&HEX.to_uppercase()).unwrap();
        assert_eq!(key, ArchiveKey::from_hex(HEX).unwrap());
        let shown = format!("{key:?}");
        assert!(
            !shown.contains("0001020304") && shown.contains("***"),
            "{shown}"
        );
        assert_eq!(key.id().len(), 16);
        let err = ArchiveKey::from_hex("zz").unwrap_err();
        assert!(!err.contains("zz"), "{err}");
        let err = ArchiveKey::from_hex(&"g".repeat(64)).unwrap_err();
        assert!(!err.contains("ggg"), "{err}");
    }
}
