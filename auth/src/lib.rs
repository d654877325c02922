//! Access tokens: the architecture document's `IJWTPayload` claims, signed
//! with Ed25519 (`alg: EdDSA`) under a `kid`, and verified with `jsonwebtoken`
//! against a JSON Web Key Set.
//!
//! The command API signs tokens with `auth.signing_key` and publishes every
//! key of `auth.public_keys` at `/.well-known/jwks.json`. Rotation adds a new
//! key to `public_keys`, then makes it the signing key, and removes the old
//! public key only after the last token it signed has expired
//! (`docs/adr/0008-signing-keys.md`). Other processes fetch the key set from
//! `auth.jwks_url` and cache it.
//!
//! # Layout
//!
//! - [`Claims`]: the token payload and the [`Principal`] the APIs act for.
//! - [`Jwks`]: the published key set.
//! - [`TokenVerifier`]: signature, issuer, audience, expiry and not-before
//!   checks against a local or fetched (cached) key set.
//! - [`TokenIssuer`]: signs claims with the active key.
//! - [`revocation`]: tokens refused before they expire (a user deactivated,
//!   locked, or whose password changed), shared through Redis and kept in
//!   each API process's memory while its subscription is up.

pub mod revocation;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tokio::sync::{Mutex, RwLock};

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
    #[error("the token was revoked: the user's sessions have ended")]
    Revoked,
}

impl AuthError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Missing => "token_missing",
            Self::Malformed => "token_malformed",
            Self::UnknownKey => "token_unknown_key",
            Self::Expired => "token_expired",
            Self::Invalid(_) => "token_invalid",
            Self::Revoked => "token_revoked",
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
    #[error("key file {0} is not an Ed25519 public key in PEM (SPKI) form")]
    NotEd25519(String),
    #[error("signing key {0} has no public key of the same kid in auth.public_keys")]
    UnpublishedSigningKey(String),
    #[error("cannot build the key set client: {0}")]
    Fetch(String),
}

fn read(path: &Path) -> Result<Vec<u8>, KeyError> {
    std::fs::read(path).map_err(|source| KeyError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// One public key of the JSON Web Key Set (`kty: OKP`, `crv: Ed25519`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicJwk {
    pub kty: String,
    pub crv: String,
    /// The 32-byte public key, base64url without padding.
    pub x: String,
    pub kid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    #[serde(default, rename = "use", skip_serializing_if = "Option::is_none")]
    pub key_use: Option<String>,
}

/// `/.well-known/jwks.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwks {
    pub keys: Vec<PublicJwk>,
}

/// DER prefix of an Ed25519 SubjectPublicKeyInfo; the key's 32 bytes follow.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

fn pem_body(pem: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(pem).ok()?;
    let body: String = text
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .map(str::trim)
        .collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

impl Jwks {
    /// The key set of `settings.public_keys` (Ed25519 SPKI PEM files).
    pub fn from_settings(settings: &AuthSettings) -> Result<Self, KeyError> {
        let mut keys = Vec::new();
        for key in &settings.public_keys {
            let pem = read(&key.pem_file)?;
            let der = pem_body(&pem)
                .filter(|der| der.len() == 44 && der.starts_with(&ED25519_SPKI_PREFIX))
                .ok_or_else(|| KeyError::NotEd25519(key.pem_file.display().to_string()))?;
            keys.push(PublicJwk {
                kty: "OKP".into(),
                crv: "Ed25519".into(),
                x: URL_SAFE_NO_PAD.encode(&der[12..]),
                kid: key.kid.clone(),
                alg: Some("EdDSA".into()),
                key_use: Some("sig".into()),
            });
        }
        Ok(Self { keys })
    }

    fn decoding_keys(&self) -> HashMap<String, DecodingKey> {
        self.keys
            .iter()
            .filter(|k| k.kty == "OKP" && k.crv == "Ed25519")
            .filter(|k| k.alg.as_deref().is_none_or(|a| a == "EdDSA"))
            .filter(|k| k.key_use.as_deref().is_none_or(|u| u == "sig"))
            .filter_map(|k| {
                DecodingKey::from_ed_components(&k.x)
                    .ok()
                    .map(|d| (k.kid.clone(), d))
            })
            .collect()
    }
}

enum KeySource {
    /// The key set is known locally (the issuing process).
    Static,
    /// Fetched from a JWKS URL and cached.
    Remote {
        url: String,
        client: reqwest::Client,
        refresh: Duration,
    },
}

struct KeyCache {
    keys: HashMap<String, DecodingKey>,
    fetched_at: Option<Instant>,
    /// Moves on with every fetch of the key set: tokens verified under an
    /// earlier one are verified again.
    generation: u64,
}

/// A token verified lately: its claims, its key id and the key set it was
/// verified under.
#[derive(Clone)]
struct Verified {
    generation: u64,
    kid: String,
    claims: Claims,
}

/// Tokens remembered as verified. A client sends the same token for its
/// whole life, and checking an Ed25519 signature costs more than the rest
/// of a by-id read; a few thousand entries cover the active callers of one
/// process.
const VERIFIED_TOKENS: usize = 4096;

/// Shortest wait between two fetches caused by unknown key ids, so that
/// tokens with made-up `kid`s cannot make us hammer the key server.
const UNKNOWN_KID_REFETCH: Duration = Duration::from_secs(5);

/// Verifies access tokens against a JSON Web Key Set.
pub struct TokenVerifier {
    cache: RwLock<KeyCache>,
    /// By SHA-256 of the token.
    verified: quick_cache::sync::Cache<[u8; 32], Verified>,
    fetch: Mutex<()>,
    source: KeySource,
    validation: Validation,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier").finish_non_exhaustive()
    }
}

impl TokenVerifier {
    fn validation(settings: &AuthSettings) -> Validation {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_audience(&[&settings.audience]);
        validation.set_issuer(&[&settings.issuer]);
        validation.set_required_spec_claims(&["exp", "nbf", "iat", "aud", "iss", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = settings.leeway_secs;
        validation
    }

    /// Verifies with `jwks`, a key set this process knows (the issuer's own).
    pub fn from_jwks(settings: &AuthSettings, jwks: &Jwks) -> Self {
        Self {
            cache: RwLock::new(KeyCache {
                keys: jwks.decoding_keys(),
                fetched_at: None,
                generation: 0,
            }),
            verified: quick_cache::sync::Cache::new(VERIFIED_TOKENS),
            fetch: Mutex::new(()),
            source: KeySource::Static,
            validation: Self::validation(settings),
        }
    }

    /// From `jwks_url` when set (fetched lazily and cached), otherwise from
    /// the configured public keys.
    pub fn from_settings(settings: &AuthSettings) -> Result<Self, KeyError> {
        if settings.jwks_url.is_empty() {
            return Ok(Self::from_jwks(settings, &Jwks::from_settings(settings)?));
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| KeyError::Fetch(e.to_string()))?;
        Ok(Self {
            cache: RwLock::new(KeyCache {
                keys: HashMap::new(),
                fetched_at: None,
                generation: 0,
            }),
            verified: quick_cache::sync::Cache::new(VERIFIED_TOKENS),
            fetch: Mutex::new(()),
            source: KeySource::Remote {
                url: settings.jwks_url.clone(),
                client,
                refresh: Duration::from_secs(settings.jwks_refresh_secs.max(1)),
            },
            validation: Self::validation(settings),
        })
    }

    /// Fetches the key set if it is stale, or if `kid` is unknown and the
    /// last fetch is a few seconds old. A failed fetch keeps the old keys.
    async fn refresh(&self, kid: &str) {
        let KeySource::Remote {
            url,
            client,
            refresh,
        } = &self.source
        else {
            return;
        };
        let needed = |cache: &KeyCache| match cache.fetched_at {
            None => true,
            Some(at) => {
                at.elapsed() >= *refresh
                    || (!cache.keys.contains_key(kid) && at.elapsed() >= UNKNOWN_KID_REFETCH)
            }
        };
        if !needed(&*self.cache.read().await) {
            return;
        }
        let _one_fetch = self.fetch.lock().await;
        if !needed(&*self.cache.read().await) {
            return;
        }
        let fetched = async {
            client
                .get(url)
                .send()
                .await?
                .error_for_status()?
                .json::<Jwks>()
                .await
        }
        .await;
        let mut cache = self.cache.write().await;
        match fetched {
            Ok(jwks) => {
                cache.keys = jwks.decoding_keys();
                tracing::debug!(keys = cache.keys.len(), "fetched the token key set");
            }
            Err(error) => tracing::warn!(%error, url, "cannot fetch the token key set"),
        }
        cache.fetched_at = Some(Instant::now());
        cache.generation += 1;
    }

    /// Verifies a raw `Authorization` header value (`Bearer <token>`).
    pub async fn verify_header(&self, header: Option<&str>) -> Result<Principal, AuthError> {
        let header = header.ok_or(AuthError::Missing)?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::Malformed)?;
        self.verify(token).await
    }

    /// Verifies a token (the JWT itself). A token verified before under the
    /// same key set is not checked again, but its expiry is, on every call.
    pub async fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        use sha2::Digest;
        let digest: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        if let Some(known) = self.verified.get(&digest) {
            self.refresh(&known.kid).await;
            if self.cache.read().await.generation == known.generation {
                let now = chrono::Utc::now().timestamp();
                let leeway = i64::try_from(self.validation.leeway).unwrap_or(i64::MAX);
                if known.claims.exp.saturating_add(leeway) < now {
                    self.verified.remove(&digest);
                    return Err(AuthError::Expired);
                }
                return Ok(Principal {
                    claims: known.claims,
                });
            }
        }
        let header = decode_header(token).map_err(|_| AuthError::Malformed)?;
        if header.alg != Algorithm::EdDSA {
            return Err(AuthError::Invalid("unsupported algorithm".into()));
        }
        let kid = header.kid.ok_or(AuthError::UnknownKey)?;
        self.refresh(&kid).await;
        let cache = self.cache.read().await;
        let key = cache.keys.get(&kid).ok_or(AuthError::UnknownKey)?;
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
        self.verified.insert(
            digest,
            Verified {
                generation: cache.generation,
                kid,
                claims: data.claims.clone(),
            },
        );
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
    ttl_secs: i64,
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
    /// Whether the holder completed multi-factor authentication.
    pub mfa: bool,
}

impl TokenRequest {
    /// A token whose permissions are those of `roles`.
    pub fn for_roles(user_id: Uuid, organization_id: Uuid, roles: &[&str]) -> Self {
        let definitions: Vec<_> = roles
            .iter()
            .filter_map(|r| pivotal_domain::permissions::built_in_role(r))
            .collect();
        Self {
            user_id,
            organization_id,
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            permissions: pivotal_domain::permissions::token_permissions(&definitions),
            mfa: false,
        }
    }
}

impl TokenIssuer {
    /// `None` when no signing key is configured. The signing key's kid must
    /// be published in `public_keys`, or nobody could verify its tokens.
    pub fn from_settings(settings: &AuthSettings) -> Result<Option<Self>, KeyError> {
        let Some(signing) = &settings.signing_key else {
            return Ok(None);
        };
        let pem = read(&signing.pem_file)?;
        let key = EncodingKey::from_ed_pem(&pem).map_err(|source| KeyError::Parse {
            path: signing.pem_file.display().to_string(),
            source,
        })?;
        if !settings.public_keys.iter().any(|k| k.kid == signing.kid) {
            return Err(KeyError::UnpublishedSigningKey(signing.kid.clone()));
        }
        Ok(Some(Self {
            kid: signing.kid.clone(),
            key,
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            ttl_secs: settings.access_token_ttl_secs,
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
            exp: now + self.ttl_secs,
            nbf: now,
            jti: Uuid::now_v7(),
            roles: request.roles.clone(),
            permissions: request.permissions.clone(),
            mfa: request.mfa,
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

    /// The same issuer with another token lifetime (development tooling).
    #[must_use]
    pub fn with_ttl(mut self, ttl_secs: i64) -> Self {
        self.ttl_secs = ttl_secs;
        self
    }

    /// Seconds an access token lives (`expiresIn`).
    pub fn ttl_secs(&self) -> i64 {
        self.ttl_secs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pivotal_settings::{PublicKeySettings, Settings, SigningKeySettings};
    use std::sync::Arc;

    fn root() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    fn dev_settings() -> AuthSettings {
        let mut auth = Settings::defaults().unwrap().auth;
        for key in &mut auth.public_keys {
            key.pem_file = root().join(&key.pem_file);
        }
        if let Some(s) = auth.signing_key.as_mut() {
            s.pem_file = root().join(&s.pem_file);
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

    fn b64(value: &serde_json::Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
    }

    #[tokio::test]
    async fn minted_token_verifies_with_seed_claims() {
        let (issuer, verifier) = pair();
        let req = request();
        let token = issuer.mint(&req).unwrap();
        let principal = verifier
            .verify_header(Some(&format!("Bearer {token}")))
            .await
            .unwrap();
        assert_eq!(principal.claims.sub, req.user_id);
        assert_eq!(principal.claims.org, req.organization_id);
        assert_eq!(principal.claims.exp - principal.claims.iat, 3600);
        assert!(principal.has(Permission::CUSTOMERS_WRITE));
        assert!(!principal.claims.mfa);
        // Exactly the seed's payload, nothing more.
        let payload = token.split('.').nth(1).unwrap();
        let json: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        let mut keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "aud",
                "exp",
                "iat",
                "iss",
                "jti",
                "mfa",
                "nbf",
                "org",
                "permissions",
                "roles",
                "sub"
            ]
        );
    }

    #[tokio::test]
    async fn every_kind_of_bad_token_is_refused() {
        let (issuer, verifier) = pair();
        let now = Utc::now().timestamp();
        let signed = |edit: &dyn Fn(&mut Claims)| {
            let mut claims = issuer.claims(&request());
            edit(&mut claims);
            issuer.sign(&claims).unwrap()
        };
        let expired = signed(&|c| c.exp = now - 3600);
        assert!(matches!(
            verifier.verify(&expired).await,
            Err(AuthError::Expired)
        ));
        for (token, why) in [
            (signed(&|c| c.nbf = now + 3600), "not yet valid"),
            (
                signed(&|c| c.aud = "another-service".into()),
                "wrong audience",
            ),
            (signed(&|c| c.iss = "someone-else".into()), "wrong issuer"),
        ] {
            match verifier.verify(&token).await {
                Err(AuthError::Invalid(reason)) => assert_eq!(reason, why),
                other => panic!("{why}: {other:?}"),
            }
        }

        let token = issuer.mint(&request()).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        // Payload swapped for another: the signature no longer matches.
        let mut claims = issuer.claims(&request());
        claims.roles = vec!["owner".into()];
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            b64(&serde_json::to_value(&claims).unwrap()),
            parts[2]
        );
        assert!(matches!(
            verifier.verify(&forged).await,
            Err(AuthError::Invalid(_))
        ));

        // alg: none, without a signature.
        let none = format!(
            "{}.{}.",
            b64(&serde_json::json!({"alg": "none", "typ": "JWT", "kid": "dev-2026-1"})),
            parts[1]
        );
        assert!(verifier.verify(&none).await.is_err());

        // HS256 keyed with the public key (the classic confusion attack).
        let public_pem = std::fs::read(root().join("config/dev/jwt-public-key.pem")).unwrap();
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("dev-2026-1".into());
        let hs = encode(
            &header,
            &issuer.claims(&request()),
            &EncodingKey::from_secret(&public_pem),
        )
        .unwrap();
        assert!(matches!(
            verifier.verify(&hs).await,
            Err(AuthError::Invalid(_))
        ));

        // A kid nobody published.
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some("who-knows".into());
        let signing = std::fs::read(root().join("config/dev/jwt-signing-key.pem")).unwrap();
        let unknown = encode(
            &header,
            &issuer.claims(&request()),
            &EncodingKey::from_ed_pem(&signing).unwrap(),
        )
        .unwrap();
        assert!(matches!(
            verifier.verify(&unknown).await,
            Err(AuthError::UnknownKey)
        ));
    }

    #[tokio::test]
    async fn previous_key_stays_valid_after_rotation() {
        let old = pair().0;
        let mut rotated = dev_settings();
        rotated.public_keys.push(PublicKeySettings {
            kid: "test-next".into(),
            pem_file: root().join("config/test/jwt-next-public-key.pem"),
        });
        rotated.signing_key = Some(SigningKeySettings {
            kid: "test-next".into(),
            pem_file: root().join("config/test/jwt-next-signing-key.pem"),
        });
        let new = TokenIssuer::from_settings(&rotated).unwrap().unwrap();
        let verifier = TokenVerifier::from_settings(&rotated).unwrap();
        assert_eq!(Jwks::from_settings(&rotated).unwrap().keys.len(), 2);
        for token in [old.mint(&request()).unwrap(), new.mint(&request()).unwrap()] {
            verifier.verify(&token).await.unwrap();
        }
        // Once the old key is retired its tokens are refused.
        let mut retired = rotated.clone();
        retired.public_keys.retain(|k| k.kid == "test-next");
        let verifier = TokenVerifier::from_settings(&retired).unwrap();
        assert!(matches!(
            verifier.verify(&old.mint(&request()).unwrap()).await,
            Err(AuthError::UnknownKey)
        ));
        // A signing key that is not published is a configuration error.
        let mut unpublished = retired;
        unpublished.signing_key = dev_settings().signing_key;
        assert!(matches!(
            TokenIssuer::from_settings(&unpublished),
            Err(KeyError::UnpublishedSigningKey(_))
        ));
    }

    #[tokio::test]
    async fn a_remembered_token_is_refused_once_it_expires() {
        let mut settings = dev_settings();
        settings.leeway_secs = 0;
        let issuer = TokenIssuer::from_settings(&settings).unwrap().unwrap();
        let verifier = TokenVerifier::from_settings(&settings).unwrap();
        let mut claims = issuer.claims(&request());
        claims.exp = Utc::now().timestamp() + 1;
        let token = issuer.sign(&claims).unwrap();
        assert_eq!(verifier.verify(&token).await.unwrap().claims, claims);
        assert_eq!(verifier.verify(&token).await.unwrap().claims, claims);
        tokio::time::sleep(Duration::from_millis(2100)).await;
        assert!(matches!(
            verifier.verify(&token).await,
            Err(AuthError::Expired)
        ));
    }

    /// Serves `body` (changeable) as the JWKS document at `/jwks`.
    fn serve_jwks(body: Arc<std::sync::Mutex<String>>) -> String {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/jwks", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            for mut socket in listener.incoming().flatten() {
                let mut request = [0u8; 4096];
                let _ = socket.read(&mut request);
                let body = body.lock().unwrap().clone();
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes());
            }
        });
        url
    }

    #[tokio::test]
    async fn a_remembered_token_is_verified_again_once_the_key_set_changes() {
        let mut rotated = dev_settings();
        rotated.public_keys.push(PublicKeySettings {
            kid: "test-next".into(),
            pem_file: root().join("config/test/jwt-next-public-key.pem"),
        });
        let both = serde_json::to_string(&Jwks::from_settings(&rotated).unwrap()).unwrap();
        let mut retired = rotated.clone();
        retired.public_keys.retain(|k| k.kid == "test-next");
        let next_only = serde_json::to_string(&Jwks::from_settings(&retired).unwrap()).unwrap();
        let published = Arc::new(std::sync::Mutex::new(both));
        let mut settings = dev_settings();
        settings.jwks_url = serve_jwks(published.clone());
        settings.jwks_refresh_secs = 1;
        let verifier = TokenVerifier::from_settings(&settings).unwrap();
        let old = pair().0.mint(&request()).unwrap();
        verifier.verify(&old).await.unwrap();
        verifier.verify(&old).await.unwrap();
        // The old key is retired: once the key set is fetched again, the
        // remembered token is checked against it and refused.
        *published.lock().unwrap() = next_only;
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert!(matches!(
            verifier.verify(&old).await,
            Err(AuthError::UnknownKey)
        ));
    }

    #[tokio::test]
    async fn missing_and_malformed_headers() {
        let (_, verifier) = pair();
        assert!(matches!(
            verifier.verify_header(None).await,
            Err(AuthError::Missing)
        ));
        assert!(matches!(
            verifier.verify_header(Some("Basic abc")).await,
            Err(AuthError::Malformed)
        ));
        assert!(matches!(
            verifier.verify_header(Some("Bearer not-a-jwt")).await,
            Err(AuthError::Malformed)
        ));
    }
}
