//! Password hashing with argon2id (PHC strings), the password policy and a
//! decoy hash that keeps sign-in time equal for unknown accounts.

use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use argon2::{Algorithm, Argon2, Params, Version};
use pivotal_domain::values::FieldError;
use pivotal_settings::PasswordSettings;

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("invalid argon2 parameters: {0}")]
    Params(String),
    #[error("hashing failed: {0}")]
    Hash(String),
}

/// Hashes and verifies passwords. Hashing runs on the blocking pool: it is
/// deliberately slow and memory hungry.
#[derive(Clone)]
pub struct Passwords {
    params: Params,
    min_length: usize,
    /// A hash of a random password, verified when the account is unknown.
    decoy: String,
}

impl std::fmt::Debug for Passwords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Passwords")
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

/// Longest accepted password, in bytes (argon2 accepts more; requests don't).
pub const MAX_PASSWORD_BYTES: usize = 256;

impl Passwords {
    pub fn new(settings: &PasswordSettings) -> Result<Self, PasswordError> {
        let params = Params::new(
            settings.memory_kib,
            settings.iterations,
            settings.parallelism,
            None,
        )
        .map_err(|e| PasswordError::Params(e.to_string()))?;
        let decoy = hash_with(&params, &crate::secrets::random_token())?;
        Ok(Self {
            params,
            min_length: settings.min_length,
            decoy,
        })
    }

    fn argon(params: &Params) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
    }

    /// The policy: at least `min_length` characters, at most 256 bytes, not
    /// only one repeated character, and not the email address.
    pub fn check_policy(
        &self,
        pointer: &str,
        password: &str,
        email: &str,
    ) -> Result<(), FieldError> {
        let chars = password.chars().count();
        if chars < self.min_length {
            return Err(FieldError::new(
                pointer,
                "password_too_short",
                format!("must be at least {} characters", self.min_length),
            ));
        }
        if password.len() > MAX_PASSWORD_BYTES {
            return Err(FieldError::new(
                pointer,
                "password_too_long",
                format!("must be at most {MAX_PASSWORD_BYTES} bytes"),
            ));
        }
        let mut distinct: Vec<char> = password.chars().collect();
        distinct.sort_unstable();
        distinct.dedup();
        if distinct.len() < 4 {
            return Err(FieldError::new(
                pointer,
                "password_too_simple",
                "must use at least 4 different characters",
            ));
        }
        if password.eq_ignore_ascii_case(email) {
            return Err(FieldError::new(
                pointer,
                "password_is_email",
                "must not be the email address",
            ));
        }
        Ok(())
    }

    pub async fn hash(&self, password: &str) -> Result<String, PasswordError> {
        let params = self.params.clone();
        let password = password.to_owned();
        tokio::task::spawn_blocking(move || hash_with(&params, &password))
            .await
            .map_err(|e| PasswordError::Hash(e.to_string()))?
    }

    /// Verifies `password` against `hash`, or against the decoy when there
    /// is no hash (unknown account or invited user), so that both take the
    /// same time. Only a real hash can match.
    pub async fn verify(&self, hash: Option<&str>, password: &str) -> bool {
        let real = hash.is_some();
        let hash = hash.unwrap_or(&self.decoy).to_owned();
        let password = password.to_owned();
        let params = self.params.clone();
        let matched = tokio::task::spawn_blocking(move || {
            Self::argon(&params)
                .verify_password(password.as_bytes(), hash.as_str())
                .is_ok()
        })
        .await
        .unwrap_or(false);
        real && matched
    }
}

fn hash_with(params: &Params, password: &str) -> Result<String, PasswordError> {
    Passwords::argon(params)
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passwords() -> Passwords {
        Passwords::new(&PasswordSettings {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
            min_length: 12,
        })
        .unwrap()
    }

    #[tokio::test]
    async fn hashes_are_argon2id_with_owasp_parameters() {
        let p = passwords();
        let hash = p.hash("correct horse battery").await.unwrap();
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(p.verify(Some(&hash), "correct horse battery").await);
        assert!(!p.verify(Some(&hash), "correct horse batterY").await);
        assert!(!p.verify(None, "correct horse battery").await);
        // Salted: the same password hashes differently.
        assert_ne!(hash, p.hash("correct horse battery").await.unwrap());
    }

    #[test]
    fn policy() {
        let p = passwords();
        let code = |pw: &str| {
            p.check_policy("/password", pw, "a@b.co")
                .err()
                .map(|e| e.code)
        };
        assert_eq!(code("short"), Some("password_too_short"));
        assert_eq!(code("aaaaaaaaaaaaaaaa"), Some("password_too_simple"));
        assert_eq!(code(&"ab12".repeat(70)), Some("password_too_long"));
        assert_eq!(
            p.check_policy("/p", "Someone@Example.com", "someone@example.com")
                .unwrap_err()
                .code,
            "password_is_email"
        );
        assert_eq!(code("correct horse battery"), None);
    }
}
