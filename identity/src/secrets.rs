//! Random tokens, their digests, recovery codes, and the box that encrypts
//! MFA secrets at rest.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use sha2::{Digest, Sha256};

/// 32 random bytes, base64url: refresh tokens, MFA challenges, invitations.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// SHA-256 of a token: what the vault stores and looks up. Tokens carry 256
/// bits of entropy, so a fast digest is enough (no salt, no stretching).
pub fn digest(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

const RECOVERY_ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";

/// A recovery code: 16 characters from an unambiguous alphabet (about 79
/// bits), shown as `xxxx-xxxx-xxxx-xxxx`.
pub fn recovery_code() -> String {
    let mut rng = rand::rng();
    let chars: Vec<char> = (0..16)
        .map(|_| {
            let i = (rng.next_u32() as usize) % RECOVERY_ALPHABET.len();
            char::from(RECOVERY_ALPHABET[i])
        })
        .collect();
    chars
        .chunks(4)
        .map(|c| c.iter().collect::<String>())
        .collect::<Vec<_>>()
        .join("-")
}

/// The form a recovery code is hashed in: lower case, no separators.
pub fn normalize_recovery_code(code: &str) -> String {
    code.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum VaultKeyError {
    #[error("cannot read the vault key {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the vault key {0} must be 32 bytes in base64")]
    Invalid(String),
}

/// Encrypts small secrets (TOTP seeds) with XChaCha20-Poly1305 under the
/// vault key. Stored form: 24-byte nonce followed by the ciphertext.
#[derive(Clone)]
pub struct SecretBox {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(..)")
    }
}

impl SecretBox {
    pub fn from_file(path: &Path) -> Result<Self, VaultKeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| VaultKeyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let key = STANDARD
            .decode(text.trim())
            .ok()
            .filter(|k| k.len() == 32)
            .ok_or_else(|| VaultKeyError::Invalid(path.display().to_string()))?;
        Self::from_key(&key).ok_or_else(|| VaultKeyError::Invalid(path.display().to_string()))
    }

    pub fn from_key(key: &[u8]) -> Option<Self> {
        XChaCha20Poly1305::new_from_slice(key)
            .ok()
            .map(|cipher| Self { cipher })
    }

    pub fn seal(&self, plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; 24];
        rand::rng().fill_bytes(&mut nonce);
        let nonce = XNonce::from(nonce);
        // Encryption of an in-memory buffer cannot fail.
        let ciphertext = self.cipher.encrypt(&nonce, plaintext).unwrap_or_default();
        [nonce.as_slice(), &ciphertext].concat()
    }

    pub fn open(&self, sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < 24 {
            return None;
        }
        let (nonce, ciphertext) = sealed.split_at(24);
        let nonce = XNonce::try_from(nonce).ok()?;
        self.cipher.decrypt(&nonce, ciphertext).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_unique_and_digests_stable() {
        let a = random_token();
        let b = random_token();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert_eq!(digest(&a), digest(&a));
        assert_ne!(digest(&a), digest(&b));
    }

    #[test]
    fn recovery_codes_normalize() {
        let code = recovery_code();
        assert_eq!(code.len(), 19);
        assert_eq!(code.matches('-').count(), 3);
        let typed = format!(" {} ", code.to_uppercase().replace('-', " "));
        assert_eq!(normalize_recovery_code(&typed), code.replace('-', ""));
    }

    #[test]
    fn box_round_trips_and_detects_tampering() {
        let key = [7u8; 32];
        let vault = SecretBox::from_key(&key).unwrap();
        let sealed = vault.seal(b"totp seed");
        assert_ne!(&sealed[24..], b"totp seed");
        assert_eq!(vault.open(&sealed).unwrap(), b"totp seed");
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(vault.open(&tampered).is_none());
        let other = SecretBox::from_key(&[8u8; 32]).unwrap();
        assert!(other.open(&sealed).is_none());
    }
}
