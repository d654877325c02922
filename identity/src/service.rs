//! [`Identity`]: the seed's `IUserManagementService` on the event store and
//! the credential vault. Every method that changes a user appends its events
//! and writes its vault rows in one transaction.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use pivotal_auth::revocation::Revocations;
use pivotal_auth::{Claims, TokenIssuer, TokenRequest, TokenVerifier};
use pivotal_domain::envelope::{Actor, CommandContext, EventMetadata};
use pivotal_domain::organization::{
    Organization, OrganizationCommand, OrganizationError, OrganizationSettings,
};
use pivotal_domain::permissions::{RoleDefinition, token_permissions};
use pivotal_domain::user::{
    LoginMethod, Profile, SessionEnd, User, UserCommand, UserError, UserState, UserStatus,
};
use pivotal_domain::values::{Email, FieldError, Name};
use pivotal_event_store::commands::{
    AggregateStore, AppendError, CommittedEvent, Decided, ExecuteError, Outcome,
};
use pivotal_settings::AuthSettings;
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::limits::{Failure, Limit, Limits};
use crate::passwords::Passwords;
use crate::secrets::{self, SecretBox};
use crate::totp;

/// Number of recovery codes issued at once.
pub const RECOVERY_CODES: usize = 10;
/// Wrong second factors one MFA challenge tolerates.
pub const CHALLENGE_ATTEMPTS: i32 = 5;
/// How often a command that lost a race is decided again. Every round has a
/// winner, so this many writers racing on one user all get through.
const RETRIES: u32 = 24;

/// Waits a random while before deciding a command again, growing with the
/// attempt, so racing writers spread out instead of colliding in lockstep.
async fn back_off(attempt: u32) {
    use rand::Rng as _;
    let ceiling = 2u64 << attempt.min(5);
    let millis = rand::rng().random_range(1..=ceiling);
    tokio::time::sleep(std::time::Duration::from_millis(millis)).await;
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("the request has invalid fields")]
    Validation(Vec<FieldError>),
    #[error("the email or password is incorrect")]
    InvalidCredentials,
    #[error("the current password is incorrect")]
    WrongCurrentPassword,
    #[error("the account is locked: {reason}")]
    AccountLocked { reason: String },
    #[error("the account is deactivated")]
    AccountDeactivated,
    #[error("too many failed sign-in attempts; try again later")]
    TooManyAttempts { retry_after_secs: u64 },
    #[error("too many requests; try again later")]
    RateLimited { retry_after_secs: u64 },
    #[error("an account with this email already exists")]
    EmailTaken,
    #[error("the refresh token is invalid, expired or revoked")]
    InvalidRefreshToken,
    #[error("the refresh token was already used; the session has been revoked")]
    RefreshTokenReused,
    #[error("the MFA challenge is invalid, expired or used up")]
    InvalidChallenge,
    #[error("the code is not valid")]
    InvalidCode,
    #[error("multi-factor authentication is not being set up")]
    NoPendingEnrolment,
    #[error("the invitation is invalid, expired or already used")]
    InvalidInvitation,
    #[error(transparent)]
    User(UserError),
    #[error(transparent)]
    Organization(OrganizationError),
    #[error("the record changed concurrently; retry")]
    Conflict,
    #[error("a backing service is unavailable: {0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<sqlx::Error> for IdentityError {
    fn from(e: sqlx::Error) -> Self {
        Self::Unavailable(format!("database: {e}"))
    }
}

impl From<redis::RedisError> for IdentityError {
    fn from(e: redis::RedisError) -> Self {
        Self::Unavailable(format!("redis: {e}"))
    }
}

impl From<AppendError> for IdentityError {
    fn from(e: AppendError) -> Self {
        match e {
            AppendError::Conflict => Self::Conflict,
            AppendError::Store(e) => e.into(),
            AppendError::TooLarge(e) => Self::Internal(e.to_string()),
        }
    }
}

impl From<ExecuteError<UserError>> for IdentityError {
    fn from(e: ExecuteError<UserError>) -> Self {
        match e {
            ExecuteError::Domain(e) => Self::User(e),
            ExecuteError::VersionConflict { .. } => Self::Conflict,
            ExecuteError::Store(e) | ExecuteError::Unavailable(e) => Self::Unavailable(e),
            ExecuteError::TooLarge(e) => Self::Internal(e.to_string()),
        }
    }
}

impl From<ExecuteError<OrganizationError>> for IdentityError {
    fn from(e: ExecuteError<OrganizationError>) -> Self {
        match e {
            ExecuteError::Domain(e) => Self::Organization(e),
            ExecuteError::VersionConflict { .. } => Self::Conflict,
            ExecuteError::Store(e) | ExecuteError::Unavailable(e) => Self::Unavailable(e),
            ExecuteError::TooLarge(e) => Self::Internal(e.to_string()),
        }
    }
}

fn is_unique_violation(e: &sqlx::Error, constraint: &str) -> bool {
    matches!(e, sqlx::Error::Database(db)
        if db.is_unique_violation() && db.constraint() == Some(constraint))
}

/// The seed's `IPublicUser`: a user without any secret, by construction.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PublicUser {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    pub phone: Option<String>,
    pub time_zone: String,
    pub preferences: serde_json::Map<String, serde_json::Value>,
    pub status: &'static str,
    pub locked: bool,
    pub lock_reason: Option<String>,
    pub locked_until: Option<DateTime<Utc>>,
    pub roles: Vec<String>,
    pub mfa_enabled: bool,
    pub last_login_at: Option<DateTime<Utc>>,
    pub login_count: u64,
}

impl PublicUser {
    pub fn of(state: &UserState) -> Self {
        let lock = state.locked_at(Utc::now());
        Self {
            id: state.id,
            organization_id: state.organization_id,
            email: state.email.as_str().to_owned(),
            first_name: state.profile.first_name.as_str().to_owned(),
            last_name: state.profile.last_name.as_str().to_owned(),
            phone: state.profile.phone.as_ref().map(|p| p.as_str().to_owned()),
            time_zone: state.profile.time_zone.as_str().to_owned(),
            preferences: state.profile.preferences.as_map().clone(),
            status: state.status.as_str(),
            locked: lock.is_some(),
            lock_reason: lock.map(|l| l.reason.clone()),
            locked_until: lock.and_then(|l| l.until),
            roles: state.roles.iter().cloned().collect(),
            mfa_enabled: state.mfa_enabled,
            last_login_at: state.last_login_at,
            login_count: state.login_count,
        }
    }
}

/// `IAuthResult`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthResult {
    pub access_token: String,
    pub refresh_token: String,
    pub token_type: &'static str,
    pub expires_in: i64,
    pub user: PublicUser,
}

/// The answer to a correct password.
#[derive(Debug, Clone)]
pub enum LoginOutcome {
    Authenticated(Box<AuthResult>),
    /// The user has MFA: complete with [`Identity::verify_mfa`].
    MfaRequired {
        challenge: String,
        expires_in: i64,
    },
}

/// Where a request came from; the envelope's metadata.
#[derive(Debug, Clone)]
pub struct Origin {
    pub metadata: EventMetadata,
}

impl Origin {
    pub fn ip(&self) -> String {
        self.metadata.ip_address.clone().unwrap_or_default()
    }

    pub fn user_agent(&self) -> String {
        self.metadata.user_agent.clone().unwrap_or_default()
    }

    fn context(&self, actor: Actor) -> CommandContext {
        CommandContext {
            actor,
            timestamp: Utc::now(),
            metadata: self.metadata.clone(),
            idempotency_key: None,
        }
    }
}

/// A second factor.
#[derive(Debug, Clone)]
pub enum SecondFactor {
    Totp(String),
    RecoveryCode(String),
}

/// What sign-up needs.
#[derive(Debug, Clone)]
pub struct SignUp {
    pub organization_name: Name,
    pub settings: OrganizationSettings,
    pub email: Email,
    pub password: String,
    pub profile: Profile,
}

/// A user created by an administrator.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub email: Email,
    pub profile: Profile,
    pub roles: BTreeSet<String>,
    /// Without one, the user is invited and chooses it.
    pub password: Option<String>,
}

#[derive(Debug, Clone)]
pub struct CreatedUser {
    pub user: PublicUser,
    pub outcome: Outcome,
    /// Shown once to the administrator, for the invited person.
    pub invitation_token: Option<String>,
}

/// `ITokenValidation` (RFC 7662 introspection response).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenValidation {
    pub active: bool,
    #[serde(skip_serializing_if = "Option::is_none", flatten)]
    pub claims: Option<Claims>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_type: Option<&'static str>,
    /// Why the token is inactive (never the token itself).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// TOTP set-up data shown once.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MfaSetup {
    pub secret: String,
    pub otpauth_uri: String,
    pub qr_code_svg: String,
}

/// Lower-cased email: the vault's sign-in key.
pub fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

fn email_digest(normalized: &str) -> String {
    secrets::digest(normalized)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The identity service.
#[derive(Debug, Clone)]
pub struct Identity {
    pool: PgPool,
    users: Arc<AggregateStore<User>>,
    organizations: Arc<AggregateStore<Organization>>,
    passwords: Passwords,
    issuer: Arc<TokenIssuer>,
    verifier: Arc<TokenVerifier>,
    limits: Limits,
    revocations: Revocations,
    vault: SecretBox,
    settings: AuthSettings,
}

/// The Redis-backed parts of the service.
#[derive(Debug, Clone)]
pub struct Services {
    pub limits: Limits,
    pub revocations: Revocations,
}

/// Why the identity service could not be assembled from settings.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("cannot load token keys: {0}")]
    Keys(#[from] pivotal_auth::KeyError),
    #[error("auth.signing_key is required to issue access tokens")]
    NoSigningKey,
    #[error("cannot load the vault key: {0}")]
    VaultKey(#[from] crate::secrets::VaultKeyError),
    #[error("invalid password hashing settings: {0}")]
    Passwords(#[from] crate::passwords::PasswordError),
    #[error("cannot connect to Redis: {0}")]
    Redis(#[from] redis::RedisError),
}

impl Identity {
    /// Assembles the service from settings: the signing key, the published
    /// key set (which also verifies), Redis for limits and the vault key.
    pub async fn from_settings(
        settings: &pivotal_settings::Settings,
        pool: PgPool,
    ) -> Result<(Self, pivotal_auth::Jwks), SetupError> {
        use secrecy::ExposeSecret;
        let auth = &settings.auth;
        let jwks = pivotal_auth::Jwks::from_settings(auth)?;
        let verifier = Arc::new(TokenVerifier::from_jwks(auth, &jwks));
        let issuer = TokenIssuer::from_settings(auth)?.ok_or(SetupError::NoSigningKey)?;
        let redis = redis::Client::open(settings.redis.url.expose_secret())?
            .get_connection_manager()
            .await?;
        let limits = Limits::new(
            redis.clone(),
            &settings.redis.key_prefix,
            auth.rate_limit.clone(),
            auth.lockout.clone(),
        );
        let revocations = Revocations::new(
            redis,
            &settings.redis.key_prefix,
            pivotal_auth::revocation::horizon_secs(auth),
        )
        .follow(settings.redis.url.expose_secret())?;
        let identity = Self::new(
            pool,
            Passwords::new(&auth.password)?,
            Arc::new(issuer),
            verifier,
            Services {
                limits,
                revocations,
            },
            SecretBox::from_file(&auth.vault_key_file)?,
            auth.clone(),
        );
        Ok((identity, jwks))
    }

    /// The verifier of the key set this service publishes.
    pub fn verifier(&self) -> Arc<TokenVerifier> {
        self.verifier.clone()
    }

    pub fn new(
        pool: PgPool,
        passwords: Passwords,
        issuer: Arc<TokenIssuer>,
        verifier: Arc<TokenVerifier>,
        services: Services,
        vault: SecretBox,
        settings: AuthSettings,
    ) -> Self {
        let Services {
            limits,
            revocations,
        } = services;
        Self {
            revocations,
            users: Arc::new(AggregateStore::new(pool.clone())),
            organizations: Arc::new(AggregateStore::new(pool.clone())),
            pool,
            passwords,
            issuer,
            verifier,
            limits,
            vault,
            settings,
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn revocations(&self) -> &Revocations {
        &self.revocations
    }

    pub fn users(&self) -> &AggregateStore<User> {
        &self.users
    }

    pub fn organizations(&self) -> &AggregateStore<Organization> {
        &self.organizations
    }

    /// The user's state if it belongs to `organization_id`.
    pub async fn user(
        &self,
        organization_id: Uuid,
        user_id: Uuid,
    ) -> Result<Option<UserState>, IdentityError> {
        let (user, _) = self.users.load(&user_id.to_string()).await?;
        Ok(user.state.filter(|s| s.organization_id == organization_id))
    }

    /// Role definitions (built-in and the organization's own) of `roles`.
    /// A role the organization no longer defines grants nothing.
    pub async fn role_definitions(
        &self,
        organization_id: Uuid,
        roles: impl IntoIterator<Item = &String>,
    ) -> Result<Vec<RoleDefinition>, IdentityError> {
        let (org, _) = self
            .organizations
            .load(&organization_id.to_string())
            .await?;
        Ok(roles.into_iter().filter_map(|r| org.role(r)).collect())
    }

    fn password_field(
        &self,
        pointer: &str,
        password: &str,
        email: &str,
    ) -> Result<(), IdentityError> {
        self.passwords
            .check_policy(pointer, password, email)
            .map_err(|e| IdentityError::Validation(vec![e]))
    }

    async fn check_ip(&self, origin: &Origin) -> Result<(), IdentityError> {
        if let Limit::Exceeded { retry_after_secs } = self.limits.hit_ip(&origin.ip()).await? {
            return Err(IdentityError::RateLimited { retry_after_secs });
        }
        Ok(())
    }

    // ----- sign-up, users -------------------------------------------------

    /// Creates the organization and its first owner, then signs the owner in.
    pub async fn sign_up(
        &self,
        request: SignUp,
        origin: &Origin,
    ) -> Result<AuthResult, IdentityError> {
        self.check_ip(origin).await?;
        let actor = Actor {
            organization_id: Uuid::now_v7(),
            user_id: Uuid::now_v7(),
        };
        self.establish(actor, request, origin).await?;
        self.complete_login(actor, LoginMethod::Password, false, origin)
            .await
    }

    /// Creates the organization `actor.organization_id` with its first
    /// owner `actor.user_id` in one transaction, without signing in.
    pub async fn establish(
        &self,
        actor: Actor,
        request: SignUp,
        origin: &Origin,
    ) -> Result<(), IdentityError> {
        self.password_field("/user/password", &request.password, request.email.as_str())?;
        let hash = self
            .passwords
            .hash(&request.password)
            .await
            .map_err(|e| IdentityError::Internal(e.to_string()))?;
        let org = self
            .organizations
            .decide(
                &actor.organization_id.to_string(),
                Some(0),
                OrganizationCommand::Create {
                    actor,
                    name: request.organization_name,
                    settings: request.settings,
                },
            )
            .await?;
        let user = self
            .users
            .decide(
                &actor.user_id.to_string(),
                Some(0),
                UserCommand::Create {
                    actor,
                    user_id: actor.user_id,
                    email: request.email.clone(),
                    profile: request.profile,
                    roles: BTreeSet::from(["owner".to_owned()]),
                    with_password: true,
                },
            )
            .await?;
        let context = origin.context(actor);
        let mut tx = self.pool.begin().await?;
        self.organizations.append(&mut tx, &org, &context).await?;
        self.users.append(&mut tx, &user, &context).await?;
        insert_credentials(&mut tx, &actor, request.email.as_str(), Some(&hash)).await?;
        tx.commit().await?;
        Ok(())
    }

    /// `createUser`: a new user in the caller's organization, with a
    /// password or invited to choose one.
    pub async fn create_user(
        &self,
        actor: Actor,
        request: NewUser,
        origin: &Origin,
    ) -> Result<CreatedUser, IdentityError> {
        if let Some(password) = &request.password {
            self.password_field("/password", password, request.email.as_str())?;
        }
        let definitions = self
            .role_definitions(actor.organization_id, request.roles.iter())
            .await?;
        if let Some(unknown) = request
            .roles
            .iter()
            .find(|r| !definitions.iter().any(|d| &&d.key == r))
        {
            return Err(IdentityError::Validation(vec![FieldError::new(
                "/roles",
                "unknown_role",
                format!("role {unknown} is not defined"),
            )]));
        }
        let hash = match &request.password {
            Some(p) => Some(
                self.passwords
                    .hash(p)
                    .await
                    .map_err(|e| IdentityError::Internal(e.to_string()))?,
            ),
            None => None,
        };
        let user_id = Uuid::now_v7();
        let decided = self
            .users
            .decide(
                &user_id.to_string(),
                Some(0),
                UserCommand::Create {
                    actor,
                    user_id,
                    email: request.email.clone(),
                    profile: request.profile,
                    roles: request.roles,
                    with_password: hash.is_some(),
                },
            )
            .await?;
        let owner = Actor {
            organization_id: actor.organization_id,
            user_id,
        };
        let mut tx = self.pool.begin().await?;
        let events = self.append_user(&mut tx, &decided, actor, origin).await?;
        insert_credentials(&mut tx, &owner, request.email.as_str(), hash.as_deref()).await?;
        let invitation_token = if hash.is_none() {
            let token = secrets::random_token();
            sqlx::query(
                "INSERT INTO invitations (token_hash, user_id, expires_at) VALUES ($1, $2, $3)",
            )
            .bind(secrets::digest(&token))
            .bind(user_id)
            .bind(Utc::now() + Duration::seconds(self.settings.invitation_ttl_secs))
            .execute(&mut *tx)
            .await?;
            Some(token)
        } else {
            None
        };
        tx.commit().await?;
        let state = decided
            .state
            .state
            .as_ref()
            .ok_or_else(|| IdentityError::Internal("created user has no state".into()))?;
        Ok(CreatedUser {
            user: PublicUser::of(state),
            outcome: Outcome {
                version: events.last().map_or(0, |e| e.sequence),
                events,
            },
            invitation_token,
        })
    }

    /// The invited user chooses a password and is signed in.
    pub async fn accept_invitation(
        &self,
        token: &str,
        password: &str,
        origin: &Origin,
    ) -> Result<AuthResult, IdentityError> {
        self.check_ip(origin).await?;
        let row: Option<(Uuid, Uuid, String)> = sqlx::query_as(
            "SELECT i.user_id, c.organization_id, c.email_normalized
             FROM invitations i JOIN credentials c USING (user_id)
             WHERE i.token_hash = $1 AND i.used_at IS NULL AND i.expires_at > now()",
        )
        .bind(secrets::digest(token))
        .fetch_optional(&self.pool)
        .await?;
        let (user_id, organization_id, email) = row.ok_or(IdentityError::InvalidInvitation)?;
        self.password_field("/password", password, &email)?;
        let hash = self
            .passwords
            .hash(password)
            .await
            .map_err(|e| IdentityError::Internal(e.to_string()))?;
        let actor = Actor {
            organization_id,
            user_id,
        };
        let decided = self
            .users
            .decide(
                &user_id.to_string(),
                None,
                UserCommand::AcceptInvitation { actor },
            )
            .await
            .map_err(|e| match IdentityError::from(e) {
                IdentityError::User(UserError::NotInvited) => IdentityError::InvalidInvitation,
                other => other,
            })?;
        let mut tx = self.pool.begin().await?;
        let used = sqlx::query(
            "UPDATE invitations SET used_at = now()
             WHERE token_hash = $1 AND used_at IS NULL AND expires_at > now()",
        )
        .bind(secrets::digest(token))
        .execute(&mut *tx)
        .await?;
        if used.rows_affected() != 1 {
            return Err(IdentityError::InvalidInvitation);
        }
        self.users
            .append(&mut tx, &decided, &origin.context(actor))
            .await?;
        set_password(&mut tx, user_id, &hash).await?;
        tx.commit().await?;
        self.complete_login(actor, LoginMethod::Password, false, origin)
            .await
    }

    // ----- sign-in ---------------------------------------------------------

    /// `authenticateUser`.
    pub async fn login(
        &self,
        email: &str,
        password: &str,
        origin: &Origin,
    ) -> Result<LoginOutcome, IdentityError> {
        let normalized = normalize_email(email);
        let digest = email_digest(&normalized);
        self.check_ip(origin).await?;
        if let Limit::Exceeded { retry_after_secs } = self.limits.hit_account(&digest).await? {
            return Err(IdentityError::RateLimited { retry_after_secs });
        }
        if let Some(retry_after_secs) = self.limits.locked_for(&digest).await? {
            return Err(IdentityError::TooManyAttempts { retry_after_secs });
        }
        let row: Option<(Uuid, Uuid, Option<String>)> = sqlx::query_as(
            "SELECT user_id, organization_id, password_hash FROM credentials
             WHERE email_normalized = $1",
        )
        .bind(&normalized)
        .fetch_optional(&self.pool)
        .await?;
        let hash = row.as_ref().and_then(|(_, _, h)| h.as_deref());
        // Same work whether or not the account exists.
        let matched = self.passwords.verify(hash, password).await;
        if !matched {
            if let Failure::LockedNow { lock_secs } = self.limits.record_failure(&digest).await?
                && let Some((user_id, organization_id, _)) = &row
            {
                self.lock_after_failures(*organization_id, *user_id, lock_secs, origin)
                    .await;
            }
            return Err(IdentityError::InvalidCredentials);
        }
        let Some((user_id, organization_id, _)) = row else {
            return Err(IdentityError::InvalidCredentials);
        };
        let state = self
            .user(organization_id, user_id)
            .await?
            .ok_or(IdentityError::InvalidCredentials)?;
        check_can_sign_in(&state)?;
        self.limits.clear(&digest).await?;
        let actor = Actor {
            organization_id,
            user_id,
        };
        if state.mfa_enabled {
            let challenge = secrets::random_token();
            sqlx::query(
                "INSERT INTO mfa_challenges (challenge_hash, user_id, expires_at, ip_address, user_agent)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(secrets::digest(&challenge))
            .bind(user_id)
            .bind(Utc::now() + Duration::seconds(self.settings.mfa_challenge_ttl_secs))
            .bind(origin.ip())
            .bind(origin.user_agent())
            .execute(&self.pool)
            .await?;
            return Ok(LoginOutcome::MfaRequired {
                challenge,
                expires_in: self.settings.mfa_challenge_ttl_secs,
            });
        }
        let result = self
            .complete_login(actor, LoginMethod::Password, false, origin)
            .await?;
        Ok(LoginOutcome::Authenticated(Box::new(result)))
    }

    async fn lock_after_failures(
        &self,
        organization_id: Uuid,
        user_id: Uuid,
        lock_secs: u64,
        origin: &Origin,
    ) {
        let system = Actor {
            organization_id,
            user_id: Uuid::nil(),
        };
        let until = Utc::now() + Duration::seconds(i64::try_from(lock_secs).unwrap_or(900));
        let result = self
            .users
            .execute(
                &user_id.to_string(),
                None,
                UserCommand::Lock {
                    actor: system,
                    reason: "too many failed sign-in attempts".into(),
                    until: Some(until),
                },
                &origin.context(system),
            )
            .await;
        match result {
            Ok(_)
            | Err(ExecuteError::Domain(UserError::AlreadyLocked | UserError::Deactivated)) => {}
            Err(error) => tracing::warn!(%error, %user_id, "cannot record the sign-in lockout"),
        }
    }

    /// `verifyMFA`: completes a sign-in with a TOTP or recovery code.
    pub async fn verify_mfa(
        &self,
        challenge: &str,
        factor: SecondFactor,
        origin: &Origin,
    ) -> Result<AuthResult, IdentityError> {
        self.check_ip(origin).await?;
        let challenge_hash = secrets::digest(challenge);
        let row: Option<(Uuid, Uuid)> = sqlx::query_as(
            "SELECT m.user_id, c.organization_id FROM mfa_challenges m JOIN credentials c USING (user_id)
             WHERE m.challenge_hash = $1 AND m.used_at IS NULL AND m.expires_at > now()
               AND m.attempts < $2",
        )
        .bind(&challenge_hash)
        .bind(CHALLENGE_ATTEMPTS)
        .fetch_optional(&self.pool)
        .await?;
        let (user_id, organization_id) = row.ok_or(IdentityError::InvalidChallenge)?;
        let state = self
            .user(organization_id, user_id)
            .await?
            .ok_or(IdentityError::InvalidChallenge)?;
        check_can_sign_in(&state)?;
        let mut tx = self.pool.begin().await?;
        let method = match self.check_factor(&mut tx, user_id, &factor).await? {
            Some(method) => method,
            None => {
                drop(tx);
                sqlx::query(
                    "UPDATE mfa_challenges SET attempts = attempts + 1 WHERE challenge_hash = $1",
                )
                .bind(&challenge_hash)
                .execute(&self.pool)
                .await?;
                return Err(IdentityError::InvalidCode);
            }
        };
        let used = sqlx::query(
            "UPDATE mfa_challenges SET used_at = now()
             WHERE challenge_hash = $1 AND used_at IS NULL",
        )
        .bind(&challenge_hash)
        .execute(&mut *tx)
        .await?;
        if used.rows_affected() != 1 {
            return Err(IdentityError::InvalidChallenge);
        }
        tx.commit().await?;
        let actor = Actor {
            organization_id,
            user_id,
        };
        self.complete_login(actor, method, true, origin).await
    }

    /// Checks and consumes a second factor inside `conn`'s transaction:
    /// a TOTP code only for a step later than the last one used, a recovery
    /// code only once.
    async fn check_factor(
        &self,
        conn: &mut PgConnection,
        user_id: Uuid,
        factor: &SecondFactor,
    ) -> Result<Option<LoginMethod>, IdentityError> {
        match factor {
            SecondFactor::Totp(code) => {
                let row: Option<(Vec<u8>, i64)> = sqlx::query_as(
                    "SELECT secret_encrypted, last_step FROM mfa_factors
                     WHERE user_id = $1 AND confirmed_at IS NOT NULL FOR UPDATE",
                )
                .bind(user_id)
                .fetch_optional(&mut *conn)
                .await?;
                let Some((sealed, last_step)) = row else {
                    return Ok(None);
                };
                let secret = self
                    .vault
                    .open(&sealed)
                    .ok_or_else(|| IdentityError::Internal("cannot open an MFA secret".into()))?;
                let now = u64::try_from(Utc::now().timestamp()).unwrap_or_default();
                let Some(step) = totp::matching_step(&secret, code, now) else {
                    return Ok(None);
                };
                let step = i64::try_from(step).unwrap_or(i64::MAX);
                if step <= last_step {
                    // A replay of a code already used.
                    return Ok(None);
                }
                sqlx::query("UPDATE mfa_factors SET last_step = $2 WHERE user_id = $1")
                    .bind(user_id)
                    .bind(step)
                    .execute(&mut *conn)
                    .await?;
                Ok(Some(LoginMethod::PasswordTotp))
            }
            SecondFactor::RecoveryCode(code) => {
                let normalized = secrets::normalize_recovery_code(code);
                let used = sqlx::query(
                    "UPDATE recovery_codes SET used_at = now()
                     WHERE user_id = $1 AND code_hash = $2 AND used_at IS NULL",
                )
                .bind(user_id)
                .bind(secrets::digest(&normalized))
                .execute(&mut *conn)
                .await?;
                Ok((used.rows_affected() == 1).then_some(LoginMethod::PasswordRecoveryCode))
            }
        }
    }

    /// Appends `user.authenticated`, opens a refresh-token family and signs
    /// an access token.
    async fn complete_login(
        &self,
        actor: Actor,
        method: LoginMethod,
        mfa: bool,
        origin: &Origin,
    ) -> Result<AuthResult, IdentityError> {
        for attempt in 0..RETRIES {
            let decided = self
                .users
                .decide(
                    &actor.user_id.to_string(),
                    None,
                    UserCommand::RecordLogin {
                        actor,
                        method,
                        ip_address: origin.ip(),
                        user_agent: origin.user_agent(),
                        at: Utc::now(),
                    },
                )
                .await?;
            let mut tx = self.pool.begin().await?;
            match self
                .users
                .append(&mut tx, &decided, &origin.context(actor))
                .await
            {
                Err(AppendError::Conflict) => {
                    drop(tx);
                    back_off(attempt).await;
                    continue;
                }
                other => {
                    other?;
                }
            }
            let family_id = Uuid::now_v7();
            sqlx::query(
                "INSERT INTO token_families (family_id, user_id, organization_id, mfa, expires_at)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(family_id)
            .bind(actor.user_id)
            .bind(actor.organization_id)
            .bind(mfa)
            .bind(Utc::now() + Duration::seconds(self.settings.refresh_token_ttl_secs))
            .execute(&mut *tx)
            .await?;
            let refresh_token = new_refresh_token(&mut tx, family_id).await?;
            tx.commit().await?;
            let state = decided
                .state
                .state
                .ok_or_else(|| IdentityError::Internal("signed-in user has no state".into()))?;
            return self.tokens(&state, mfa, refresh_token).await;
        }
        Err(IdentityError::Conflict)
    }

    async fn tokens(
        &self,
        state: &UserState,
        mfa: bool,
        refresh_token: String,
    ) -> Result<AuthResult, IdentityError> {
        let definitions = self
            .role_definitions(state.organization_id, state.roles.iter())
            .await?;
        let request = TokenRequest {
            user_id: state.id,
            organization_id: state.organization_id,
            roles: state.roles.iter().cloned().collect(),
            permissions: token_permissions(&definitions),
            mfa,
        };
        let access_token = self
            .issuer
            .mint(&request)
            .map_err(|e| IdentityError::Internal(format!("cannot sign a token: {e}")))?;
        Ok(AuthResult {
            access_token,
            refresh_token,
            token_type: "Bearer",
            expires_in: self.issuer.ttl_secs(),
            user: PublicUser::of(state),
        })
    }

    /// `refreshToken`: rotates the refresh token. A token used twice revokes
    /// its whole family and records `user.session.ended` (token reuse).
    pub async fn refresh(
        &self,
        refresh_token: &str,
        origin: &Origin,
    ) -> Result<AuthResult, IdentityError> {
        self.check_ip(origin).await?;
        let mut tx = self.pool.begin().await?;
        let row: Option<RefreshRow> = sqlx::query_as(
            "SELECT t.family_id, t.used_at, f.user_id, f.organization_id, f.mfa, f.revoked_at, f.expires_at
             FROM refresh_tokens t JOIN token_families f USING (family_id)
             WHERE t.token_hash = $1
             FOR UPDATE OF t, f",
        )
        .bind(secrets::digest(refresh_token))
        .fetch_optional(&mut *tx)
        .await?;
        let RefreshRow {
            family_id,
            used_at,
            user_id,
            organization_id,
            mfa,
            revoked_at,
            expires_at,
        } = row.ok_or(IdentityError::InvalidRefreshToken)?;
        if revoked_at.is_some() || expires_at <= Utc::now() {
            return Err(IdentityError::InvalidRefreshToken);
        }
        let actor = Actor {
            organization_id,
            user_id,
        };
        if used_at.is_some() {
            tracing::warn!(%user_id, %family_id, "refresh token reused; revoking the session");
            self.end_session(tx, actor, family_id, SessionEnd::TokenReuse, origin)
                .await?;
            // Whoever holds the stolen token may hold its access tokens too.
            self.revocations.revoke_user(user_id).await?;
            return Err(IdentityError::RefreshTokenReused);
        }
        let state = self
            .user(organization_id, user_id)
            .await?
            .ok_or(IdentityError::InvalidRefreshToken)?;
        if let Err(refusal) = check_can_sign_in(&state) {
            self.end_session(tx, actor, family_id, SessionEnd::AccountChange, origin)
                .await?;
            return Err(refusal);
        }
        sqlx::query("UPDATE refresh_tokens SET used_at = now() WHERE token_hash = $1")
            .bind(secrets::digest(refresh_token))
            .execute(&mut *tx)
            .await?;
        let next = new_refresh_token(&mut tx, family_id).await?;
        tx.commit().await?;
        self.tokens(&state, mfa, next).await
    }

    /// Revokes `family_id` and records why, in `tx`.
    async fn end_session(
        &self,
        mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
        actor: Actor,
        family_id: Uuid,
        reason: SessionEnd,
        origin: &Origin,
    ) -> Result<(), IdentityError> {
        let label = match reason {
            SessionEnd::Logout => "logout",
            SessionEnd::TokenReuse => "token_reuse",
            SessionEnd::AccountChange => "account_change",
        };
        sqlx::query(
            "UPDATE token_families SET revoked_at = now(), revoked_reason = $2
             WHERE family_id = $1 AND revoked_at IS NULL",
        )
        .bind(family_id)
        .bind(label)
        .execute(&mut *tx)
        .await?;
        for attempt in 0..RETRIES {
            let decided = self
                .users
                .decide(
                    &actor.user_id.to_string(),
                    None,
                    UserCommand::EndSession {
                        actor,
                        family_id,
                        reason,
                    },
                )
                .await?;
            let mut savepoint = sqlx::Connection::begin(&mut *tx).await?;
            match self
                .users
                .append(&mut savepoint, &decided, &origin.context(actor))
                .await
            {
                Err(AppendError::Conflict) => {
                    drop(savepoint);
                    back_off(attempt).await;
                    continue;
                }
                other => {
                    other?;
                    savepoint.commit().await?;
                    tx.commit().await?;
                    return Ok(());
                }
            }
        }
        Err(IdentityError::Conflict)
    }

    /// Revokes the session of `refresh_token` (RFC 7009: an unknown or
    /// already revoked token is not an error).
    pub async fn logout(&self, refresh_token: &str, origin: &Origin) -> Result<(), IdentityError> {
        let mut tx = self.pool.begin().await?;
        let row: Option<(Uuid, Uuid, Uuid)> = sqlx::query_as(
            "SELECT f.family_id, f.user_id, f.organization_id
             FROM refresh_tokens t JOIN token_families f USING (family_id)
             WHERE t.token_hash = $1 AND f.revoked_at IS NULL
             FOR UPDATE OF f",
        )
        .bind(secrets::digest(refresh_token))
        .fetch_optional(&mut *tx)
        .await?;
        let Some((family_id, user_id, organization_id)) = row else {
            return Ok(());
        };
        let actor = Actor {
            organization_id,
            user_id,
        };
        self.end_session(tx, actor, family_id, SessionEnd::Logout, origin)
            .await
    }

    /// `validateToken`: signature, claims, and whether the user may still
    /// act (not deactivated or locked since the token was issued).
    pub async fn validate_token(&self, token: &str) -> Result<TokenValidation, IdentityError> {
        let inactive = |reason: String| TokenValidation {
            active: false,
            claims: None,
            token_type: None,
            reason: Some(reason),
        };
        let principal = match self.verifier.verify(token).await {
            Ok(p) => p,
            Err(e) => return Ok(inactive(e.code().to_owned())),
        };
        let claims = principal.claims;
        if self.revocations.is_revoked(&claims).await? {
            return Ok(inactive("token_revoked".into()));
        }
        let Some(state) = self.user(claims.org, claims.sub).await? else {
            return Ok(inactive("user_unknown".into()));
        };
        if let Err(refusal) = check_can_sign_in(&state) {
            let reason = match refusal {
                IdentityError::AccountDeactivated => "user_deactivated",
                _ => "user_locked",
            };
            return Ok(inactive(reason.into()));
        }
        Ok(TokenValidation {
            active: true,
            claims: Some(claims),
            token_type: Some("access_token"),
            reason: None,
        })
    }

    // ----- passwords, MFA -----------------------------------------------

    /// Decides `command` on the current state of `user_id`.
    async fn decide_user(
        &self,
        user_id: Uuid,
        command: UserCommand,
    ) -> Result<Decided<User>, IdentityError> {
        Ok(self
            .users
            .decide(&user_id.to_string(), None, command)
            .await?)
    }

    /// Appends decided user events in `conn`'s transaction for `actor`.
    async fn append_user(
        &self,
        conn: &mut PgConnection,
        decided: &Decided<User>,
        actor: Actor,
        origin: &Origin,
    ) -> Result<Vec<CommittedEvent>, IdentityError> {
        Ok(self
            .users
            .append(conn, decided, &origin.context(actor))
            .await?)
    }

    /// Changes the caller's password after checking the current one, and
    /// ends every session of the user.
    pub async fn change_password(
        &self,
        actor: Actor,
        current: &str,
        new: &str,
        origin: &Origin,
    ) -> Result<Outcome, IdentityError> {
        let hash: Option<(Option<String>, String)> = sqlx::query_as(
            "SELECT password_hash, email_normalized FROM credentials WHERE user_id = $1",
        )
        .bind(actor.user_id)
        .fetch_optional(&self.pool)
        .await?;
        let (hash, email) = hash.ok_or(IdentityError::User(UserError::NotFound))?;
        if !self.passwords.verify(hash.as_deref(), current).await {
            return Err(IdentityError::WrongCurrentPassword);
        }
        self.password_field("/newPassword", new, &email)?;
        let new_hash = self
            .passwords
            .hash(new)
            .await
            .map_err(|e| IdentityError::Internal(e.to_string()))?;
        let decided = self
            .decide_user(actor.user_id, UserCommand::ChangePassword { actor })
            .await?;
        let mut tx = self.pool.begin().await?;
        let events = self.append_user(&mut tx, &decided, actor, origin).await?;
        set_password(&mut tx, actor.user_id, &new_hash).await?;
        revoke_all(&mut tx, actor.user_id, "password_changed").await?;
        tx.commit().await?;
        self.revocations.revoke_user(actor.user_id).await?;
        Ok(outcome(events))
    }

    /// Runs a user command whose effect reaches the vault: deactivation and
    /// locks end every session; email changes move the sign-in key.
    pub async fn execute_user(
        &self,
        actor: Actor,
        user_id: Uuid,
        expected_version: Option<u64>,
        command: UserCommand,
        origin: &Origin,
    ) -> Result<(Outcome, UserState), IdentityError> {
        for attempt in 0..RETRIES {
            let decided = self
                .users
                .decide(&user_id.to_string(), expected_version, command.clone())
                .await?;
            let mut tx = self.pool.begin().await?;
            let events = match self
                .users
                .append(&mut tx, &decided, &origin.context(actor))
                .await
            {
                Err(AppendError::Conflict) if expected_version.is_none() => {
                    drop(tx);
                    back_off(attempt).await;
                    continue;
                }
                other => other?,
            };
            match &command {
                UserCommand::Deactivate { .. } => {
                    revoke_all(&mut tx, user_id, "deactivated").await?;
                }
                UserCommand::Lock { .. } => revoke_all(&mut tx, user_id, "locked").await?,
                UserCommand::ChangeEmail { email, .. } if !events.is_empty() => {
                    sqlx::query("UPDATE credentials SET email_normalized = $2 WHERE user_id = $1")
                        .bind(user_id)
                        .bind(normalize_email(email.as_str()))
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| {
                            if is_unique_violation(&e, "credentials_email_normalized_key") {
                                IdentityError::EmailTaken
                            } else {
                                e.into()
                            }
                        })?;
                }
                _ => {}
            }
            tx.commit().await?;
            if matches!(
                command,
                UserCommand::Deactivate { .. } | UserCommand::Lock { .. }
            ) {
                self.revocations.revoke_user(user_id).await?;
            }
            if matches!(command, UserCommand::Unlock { .. })
                && let Some(state) = decided.state.state.as_ref()
            {
                self.limits
                    .clear(&email_digest(&normalize_email(state.email.as_str())))
                    .await?;
            }
            let state = decided
                .state
                .state
                .ok_or_else(|| IdentityError::Internal("user has no state".into()))?;
            return Ok((outcome(events), state));
        }
        Err(IdentityError::Conflict)
    }

    /// `enableMFA`, step one: a new TOTP secret, pending until confirmed.
    pub async fn begin_mfa(&self, actor: Actor) -> Result<MfaSetup, IdentityError> {
        let state = self
            .user(actor.organization_id, actor.user_id)
            .await?
            .ok_or(IdentityError::User(UserError::NotFound))?;
        if state.mfa_enabled {
            return Err(IdentityError::User(UserError::MfaAlreadyEnabled));
        }
        let secret = totp::new_secret();
        let setup = totp::enrolment(&secret, state.email.as_str())
            .ok_or_else(|| IdentityError::Internal("cannot build the TOTP enrolment".into()))?;
        sqlx::query(
            "INSERT INTO mfa_factors (user_id, secret_encrypted) VALUES ($1, $2)
             ON CONFLICT (user_id) DO UPDATE
               SET secret_encrypted = EXCLUDED.secret_encrypted, last_step = 0, created_at = now()
               WHERE mfa_factors.confirmed_at IS NULL",
        )
        .bind(actor.user_id)
        .bind(self.vault.seal(&secret))
        .execute(&self.pool)
        .await?;
        Ok(MfaSetup {
            secret: setup.secret_base32,
            otpauth_uri: setup.otpauth_uri,
            qr_code_svg: setup.qr_svg,
        })
    }

    /// `enableMFA`, step two: the first valid code turns MFA on and yields
    /// the recovery codes, shown this once.
    pub async fn confirm_mfa(
        &self,
        actor: Actor,
        code: &str,
        origin: &Origin,
    ) -> Result<Vec<String>, IdentityError> {
        let decided = self
            .decide_user(actor.user_id, UserCommand::EnableMfa { actor })
            .await?;
        let mut tx = self.pool.begin().await?;
        let row: Option<(Vec<u8>,)> = sqlx::query_as(
            "SELECT secret_encrypted FROM mfa_factors
             WHERE user_id = $1 AND confirmed_at IS NULL FOR UPDATE",
        )
        .bind(actor.user_id)
        .fetch_optional(&mut *tx)
        .await?;
        let (sealed,) = row.ok_or(IdentityError::NoPendingEnrolment)?;
        let secret = self
            .vault
            .open(&sealed)
            .ok_or_else(|| IdentityError::Internal("cannot open an MFA secret".into()))?;
        let now = u64::try_from(Utc::now().timestamp()).unwrap_or_default();
        let step = totp::matching_step(&secret, code, now).ok_or(IdentityError::InvalidCode)?;
        sqlx::query(
            "UPDATE mfa_factors SET confirmed_at = now(), last_step = $2 WHERE user_id = $1",
        )
        .bind(actor.user_id)
        .bind(i64::try_from(step).unwrap_or(i64::MAX))
        .execute(&mut *tx)
        .await?;
        let codes = replace_recovery_codes(&mut tx, actor.user_id).await?;
        self.users
            .append(&mut tx, &decided, &origin.context(actor))
            .await?;
        tx.commit().await?;
        Ok(codes)
    }

    /// Turns MFA off; needs a current TOTP code or an unused recovery code.
    pub async fn disable_mfa(
        &self,
        actor: Actor,
        factor: SecondFactor,
        origin: &Origin,
    ) -> Result<Outcome, IdentityError> {
        let decided = self
            .decide_user(actor.user_id, UserCommand::DisableMfa { actor })
            .await?;
        let mut tx = self.pool.begin().await?;
        if self
            .check_factor(&mut tx, actor.user_id, &factor)
            .await?
            .is_none()
        {
            return Err(IdentityError::InvalidCode);
        }
        sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1")
            .bind(actor.user_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM mfa_factors WHERE user_id = $1")
            .bind(actor.user_id)
            .execute(&mut *tx)
            .await?;
        let events = self.append_user(&mut tx, &decided, actor, origin).await?;
        tx.commit().await?;
        Ok(outcome(events))
    }

    /// New recovery codes (the old ones stop working); needs a TOTP code.
    pub async fn regenerate_recovery_codes(
        &self,
        actor: Actor,
        code: &str,
        origin: &Origin,
    ) -> Result<Vec<String>, IdentityError> {
        let decided = self
            .decide_user(
                actor.user_id,
                UserCommand::RegenerateRecoveryCodes { actor },
            )
            .await?;
        let mut tx = self.pool.begin().await?;
        if self
            .check_factor(&mut tx, actor.user_id, &SecondFactor::Totp(code.to_owned()))
            .await?
            .is_none()
        {
            return Err(IdentityError::InvalidCode);
        }
        let codes = replace_recovery_codes(&mut tx, actor.user_id).await?;
        self.users
            .append(&mut tx, &decided, &origin.context(actor))
            .await?;
        tx.commit().await?;
        Ok(codes)
    }

    /// Unused recovery codes left.
    pub async fn recovery_codes_left(&self, user_id: Uuid) -> Result<i64, IdentityError> {
        let (n,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM recovery_codes WHERE user_id = $1 AND used_at IS NULL",
        )
        .bind(user_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(n)
    }
}

#[derive(sqlx::FromRow)]
struct RefreshRow {
    family_id: Uuid,
    used_at: Option<DateTime<Utc>>,
    user_id: Uuid,
    organization_id: Uuid,
    mfa: bool,
    revoked_at: Option<DateTime<Utc>>,
    expires_at: DateTime<Utc>,
}

fn outcome(events: Vec<pivotal_event_store::commands::CommittedEvent>) -> Outcome {
    Outcome {
        version: events.last().map_or(0, |e| e.sequence),
        events,
    }
}

/// Refuses deactivated and locked users: a temporary lock with the seconds
/// left, an indefinite one with its reason.
fn check_can_sign_in(state: &UserState) -> Result<(), IdentityError> {
    match state.status {
        UserStatus::Deactivated => return Err(IdentityError::AccountDeactivated),
        UserStatus::Invited => return Err(IdentityError::InvalidCredentials),
        UserStatus::Active => {}
    }
    let now = Utc::now();
    if let Some(lock) = state.locked_at(now) {
        return Err(match lock.until {
            Some(until) => IdentityError::TooManyAttempts {
                retry_after_secs: u64::try_from((until - now).num_seconds().max(1)).unwrap_or(1),
            },
            None => IdentityError::AccountLocked {
                reason: lock.reason.clone(),
            },
        });
    }
    Ok(())
}

async fn insert_credentials(
    conn: &mut PgConnection,
    owner: &Actor,
    email: &str,
    hash: Option<&str>,
) -> Result<(), IdentityError> {
    sqlx::query(
        "INSERT INTO credentials (user_id, organization_id, email_normalized, password_hash, password_changed_at)
         VALUES ($1, $2, $3, $4, CASE WHEN $4::text IS NULL THEN NULL ELSE now() END)",
    )
    .bind(owner.user_id)
    .bind(owner.organization_id)
    .bind(normalize_email(email))
    .bind(hash)
    .execute(&mut *conn)
    .await
    .map_err(|e| {
        if is_unique_violation(&e, "credentials_email_normalized_key") {
            IdentityError::EmailTaken
        } else {
            e.into()
        }
    })?;
    Ok(())
}

async fn set_password(
    conn: &mut PgConnection,
    user_id: Uuid,
    hash: &str,
) -> Result<(), IdentityError> {
    sqlx::query(
        "UPDATE credentials SET password_hash = $2, password_changed_at = now() WHERE user_id = $1",
    )
    .bind(user_id)
    .bind(hash)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn revoke_all(
    conn: &mut PgConnection,
    user_id: Uuid,
    reason: &str,
) -> Result<(), IdentityError> {
    sqlx::query(
        "UPDATE token_families SET revoked_at = now(), revoked_reason = $2
         WHERE user_id = $1 AND revoked_at IS NULL",
    )
    .bind(user_id)
    .bind(reason)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn new_refresh_token(
    conn: &mut PgConnection,
    family_id: Uuid,
) -> Result<String, IdentityError> {
    let token = secrets::random_token();
    sqlx::query("INSERT INTO refresh_tokens (token_hash, family_id) VALUES ($1, $2)")
        .bind(secrets::digest(&token))
        .bind(family_id)
        .execute(&mut *conn)
        .await?;
    Ok(token)
}

async fn replace_recovery_codes(
    conn: &mut PgConnection,
    user_id: Uuid,
) -> Result<Vec<String>, IdentityError> {
    sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut *conn)
        .await?;
    let codes: Vec<String> = (0..RECOVERY_CODES)
        .map(|_| secrets::recovery_code())
        .collect();
    for code in &codes {
        sqlx::query("INSERT INTO recovery_codes (user_id, code_hash) VALUES ($1, $2)")
            .bind(user_id)
            .bind(secrets::digest(&secrets::normalize_recovery_code(code)))
            .execute(&mut *conn)
            .await?;
    }
    Ok(codes)
}
