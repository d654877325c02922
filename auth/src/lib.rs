//! Access tokens: the architecture document's `IJWTPayload` claims, verified
//! with `jsonwebtoken` against configured Ed25519 public keys selected by `kid`.
//!
//! Issuing tokens to users belongs to the identity service; [`TokenIssuer`]
//! here mints tokens from a configured private key for development, the demo
//! and tests.
//!
//! # Layout
//!
//! - [`Claims`]: the token payload and the [`Principal`] the APIs act for.
//! - [`TokenVerifier`]: signature, issuer, audience, expiry and not-before checks.
//! - [`TokenIssuer`]: signs claims (development and tests only).

use std::collections::HashMap;
use std::path::Path;

use chrono::Utc;
use jsonwebtoken::{
    Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, decode_header, encode,
};
use pivotal_domain::envelope::Actor;
use pivotal_domain::permissions::Permission;
use pivotal_settings::AuthSettings;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// `IJWTPayload`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// User id.
    pub sub: Uuid,
    /// Organization id (the tenant).
    pub org: Uuid,
    pub aud: String,
    pub iss: String,
    pub iat: i64,
    pub exp: i64,
    pub nbf: i64,
    pub jti: Uuid,
    pub roles: Vec<String>,
    pub permissions: Vec<String>,
    pub mfa: bool,
}

/// The verified caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub claims: Claims,
}

impl Principal {
    pub fn actor(&self) -> Actor {
        Actor {
            organization_id: self.claims.org,
            user_id: self.claims.sub,
        }
    }

    pub fn has(&self, permission: Permission) -> bool {
        permission.is_granted_by(&self.claims.permissions)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("the bearer token is missing")]
    Missing,
    #[error("the bearer token is malformed")]
    Malformed,
    #[error("the token's key id is not known")]
    UnknownKey,
    #[error("the token has expired")]
    Expired,
    #[error("the token is invalid: {0}")]
    Invalid(String),
}

impl AuthError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Missing => "token_missing",
            Self::Malformed => "token_malformed",
            Self::UnknownKey => "token_unknown_key",
            Self::Expired => "token_expired",
            Self::Invalid(_) => "token_invalid",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("key file {path} is not an Ed25519 PEM key: {source}")]
    Parse {
        path: String,
        source: jsonwebtoken::errors::Error,
    },
}

fn read(path: &Path) -> Result<Vec<u8>, KeyError> {
    std::fs::read(path).map_err(|source| KeyError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// Verifies access tokens.
#[derive(Clone)]
pub struct TokenVerifier {
    keys: HashMap<String, DecodingKey>,
    validation: Validation,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("kids", &self.keys.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl TokenVerifier {
    pub fn from_settings(settings: &AuthSettings) -> Result<Self, KeyError> {
        let mut keys = HashMap::new();
        for key in &settings.public_keys {
            let pem = read(&key.pem_file)?;
            let decoding = DecodingKey::from_ed_pem(&pem).map_err(|source| KeyError::Parse {
                path: key.pem_file.display().to_string(),
                source,
            })?;
            keys.insert(key.kid.clone(), decoding);
        }
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_audience(&[&settings.audience]);
        validation.set_issuer(&[&settings.issuer]);
        validation.set_required_spec_claims(&["exp", "nbf", "iat", "aud", "iss", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = settings.leeway_secs;
        Ok(Self { keys, validation })
    }

    /// Verifies a raw `Authorization` header value (`Bearer <token>`).
    pub fn verify_header(&self, header: Option<&str>) -> Result<Principal, AuthError> {
        let header = header.ok_or(AuthError::Missing)?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::Malformed)?;
        self.verify(token)
    }

    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let header = decode_header(token).map_err(|_| AuthError::Malformed)?;
        if header.alg != Algorithm::EdDSA {
            return Err(AuthError::Invalid("unsupported algorithm".into()));
        }
        let key = header
            .kid
            .as_ref()
            .and_then(|kid| self.keys.get(kid))
            .ok_or(AuthError::UnknownKey)?;
        let data = decode::<Claims>(token, key, &self.validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::InvalidToken
                | ErrorKind::Base64(_)
                | ErrorKind::Json(_)
                | ErrorKind::Utf8(_) => AuthError::Malformed,
                ErrorKind::ImmatureSignature => AuthError::Invalid("not yet valid".into()),
                ErrorKind::InvalidAudience => AuthError::Invalid("wrong audience".into()),
                ErrorKind::InvalidIssuer => AuthError::Invalid("wrong issuer".into()),
                ErrorKind::InvalidSignature => AuthError::Invalid("bad signature".into()),
                ErrorKind::MissingRequiredClaim(c) => {
                    AuthError::Invalid(format!("missing claim {c}"))
                }
                _ => AuthError::Invalid("rejected".into()),
            }
        })?;
        Ok(Principal {
            claims: data.claims,
        })
    }
}

/// Signs access tokens with a configured private key (development and tests).
#[derive(Clone)]
pub struct TokenIssuer {
    kid: String,
    key: EncodingKey,
    issuer: String,
    audience: String,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// What a minted token says about its holder.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub user_id: Uuid,
    pub organization_id: Uuid,
    pub roles: Vec<String>,
    pub permissions: Vec<String>,
    pub ttl_secs: i64,
}

impl TokenRequest {
    /// A token whose permissions are those of `roles`.
    pub fn for_roles(user_id: Uuid, organization_id: Uuid, roles: &[&str]) -> Self {
        let mut permissions: Vec<String> = roles
            .iter()
            .flat_map(|r| pivotal_domain::permissions::role_permissions(r))
            .map(|p| (*p).to_owned())
            .collect();
        permissions.sort();
        permissions.dedup();
        Self {
            user_id,
            organization_id,
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            permissions,
            ttl_secs: 3600,
        }
    }
}

impl TokenIssuer {
    /// `None` when no signing key is configured.
    pub fn from_settings(settings: &AuthSettings) -> Result<Option<Self>, KeyError> {
        let Some(signing) = &settings.signing_key else {
            return Ok(None);
        };
        let pem = read(&signing.pem_file)?;
        let key = EncodingKey::from_ed_pem(&pem).map_err(|source| KeyError::Parse {
            path: signing.pem_file.display().to_string(),
            source,
        })?;
        Ok(Some(Self {
            kid: signing.kid.clone(),
            key,
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
        }))
    }

    pub fn claims(&self, request: &TokenRequest) -> Claims {
        let now = Utc::now().timestamp();
        Claims {
            sub: request.user_id,
            org: request.organization_id,
            aud: self.audience.clone(),
            iss: self.issuer.clone(),
            iat: now,
            exp: now + request.ttl_secs,
            nbf: now,
            jti: Uuid::now_v7(),
            roles: request.roles.clone(),
            permissions: request.permissions.clone(),
            mfa: false,
        }
    }

    pub fn sign(&self, claims: &Claims) -> Result<String, jsonwebtoken::errors::Error> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        encode(&header, claims, &self.key)
    }

    pub fn mint(&self, request: &TokenRequest) -> Result<String, jsonwebtoken::errors::Error> {
        self.sign(&self.claims(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pivotal_settings::Settings;

    fn dev_settings() -> AuthSettings {
        let mut auth = Settings::defaults().unwrap().auth;
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        for key in &mut auth.public_keys {
            key.pem_file = root.join(&key.pem_file);
        }
        if let Some(s) = auth.signing_key.as_mut() {
            s.pem_file = root.join(&s.pem_file);
        }
        auth
    }

    fn pair() -> (TokenIssuer, TokenVerifier) {
        let settings = dev_settings();
        (
            TokenIssuer::from_settings(&settings).unwrap().unwrap(),
            TokenVerifier::from_settings(&settings).unwrap(),
        )
    }

    fn request() -> TokenRequest {
        TokenRequest::for_roles(Uuid::now_v7(), Uuid::now_v7(), &["manager"])
    }

    #[test]
    fn minted_token_verifies_with_seed_claims() {
        let (issuer, verifier) = pair();
        let req = request();
        let token = issuer.mint(&req).unwrap();
        let principal = verifier
            .verify_header(Some(&format!("Bearer {token}")))
            .unwrap();
        assert_eq!(principal.claims.sub, req.user_id);
        assert_eq!(principal.claims.org, req.organization_id);
        assert!(principal.has(Permission::CUSTOMERS_WRITE));
        assert!(!principal.claims.mfa);
    }

    #[test]
    fn expired_wrong_audience_and_tampered_tokens_are_refused() {
        let (issuer, verifier) = pair();
        let mut claims = issuer.claims(&request());
        claims.exp = Utc::now().timestamp() - 3600;
        let expired = issuer.sign(&claims).unwrap();
        assert!(matches!(verifier.verify(&expired), Err(AuthError::Expired)));

        let mut claims = issuer.claims(&request());
        claims.aud = "another-service".into();
        let wrong_aud = issuer.sign(&claims).unwrap();
        assert!(matches!(
            verifier.verify(&wrong_aud),
            Err(AuthError::Invalid(_))
        ));

        let token = issuer.mint(&request()).unwrap();
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        parts[1] = parts[1].chars().rev().collect();
        let tampered = parts.join(".");
        assert!(verifier.verify(&tampered).is_err());
    }

    #[test]
    fn missing_and_malformed_headers() {
        let (_, verifier) = pair();
        assert!(matches!(
            verifier.verify_header(None),
            Err(AuthError::Missing)
        ));
        assert!(matches!(
            verifier.verify_header(Some("Basic abc")),
            Err(AuthError::Malformed)
        ));
        assert!(matches!(
            verifier.verify_header(Some("Bearer not-a-jwt")),
            Err(AuthError::Malformed)
        ));
    }
}
