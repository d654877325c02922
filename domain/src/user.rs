//! The `User` aggregate: a person who works in one organization.
//!
//! Events carry no secret: password hashes, MFA secrets, recovery codes and
//! refresh tokens live in the write side's credential vault (see
//! `docs/adr/0007-credential-vault.md`); the events only say that something
//! happened (`user.password.changed`, `user.mfa.enabled`).

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::envelope::Actor;
use crate::values::{Email, Name, Phone, Preferences, TimeZone};

pub const AGGREGATE_TYPE: &str = "user";
pub const SCHEMA_VERSION: u32 = 1;
/// Most roles one user may hold.
pub const MAX_ROLES: usize = 20;
/// Longest lock, deactivation or other reason, in characters.
pub const MAX_REASON_CHARS: usize = 500;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum UserStatus {
    /// Invited, no password set yet.
    Invited,
    #[default]
    Active,
    /// The seed's `deleteUser`: cannot sign in; history keeps the user.
    Deactivated,
}

impl UserStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Invited => "invited",
            Self::Active => "active",
            Self::Deactivated => "deactivated",
        }
    }
}

/// Profile fields a user or an administrator may change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    pub first_name: Name,
    pub last_name: Name,
    pub phone: Option<Phone>,
    pub time_zone: TimeZone,
    pub preferences: Preferences,
}

/// How a user signed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LoginMethod {
    Password,
    /// Password, then a TOTP code.
    PasswordTotp,
    /// Password, then a single-use recovery code.
    PasswordRecoveryCode,
    /// A refresh token was exchanged.
    Refresh,
}

/// Why a session (refresh-token family) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SessionEnd {
    Logout,
    /// An already-used refresh token was presented: the family is revoked.
    TokenReuse,
    /// The user was deactivated or locked, or changed the password.
    AccountChange,
}

/// A temporary or indefinite lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Lock {
    pub reason: String,
    /// End of a temporary lock; `None` until an administrator unlocks.
    pub until: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserCommand {
    /// Sign-up's first owner, or an administrator's new user. Without a
    /// password the user is `invited` until they accept.
    Create {
        actor: Actor,
        user_id: Uuid,
        email: Email,
        profile: Profile,
        roles: BTreeSet<String>,
        with_password: bool,
    },
    AcceptInvitation {
        actor: Actor,
    },
    UpdateProfile {
        actor: Actor,
        profile: Profile,
    },
    ChangeEmail {
        actor: Actor,
        email: Email,
    },
    ChangePassword {
        actor: Actor,
    },
    Deactivate {
        actor: Actor,
        reason: Option<String>,
    },
    Reactivate {
        actor: Actor,
    },
    Lock {
        actor: Actor,
        reason: String,
        until: Option<DateTime<Utc>>,
    },
    Unlock {
        actor: Actor,
    },
    AssignRole {
        actor: Actor,
        role: String,
    },
    RevokeRole {
        actor: Actor,
        role: String,
    },
    /// `updateLoginStats` plus `user.authenticated`.
    RecordLogin {
        actor: Actor,
        method: LoginMethod,
        ip_address: String,
        user_agent: String,
        at: DateTime<Utc>,
    },
    EnableMfa {
        actor: Actor,
    },
    DisableMfa {
        actor: Actor,
    },
    RegenerateRecoveryCodes {
        actor: Actor,
    },
    EndSession {
        actor: Actor,
        family_id: Uuid,
        reason: SessionEnd,
    },
}

impl UserCommand {
    pub fn actor(&self) -> Actor {
        match self {
            Self::Create { actor, .. }
            | Self::AcceptInvitation { actor }
            | Self::UpdateProfile { actor, .. }
            | Self::ChangeEmail { actor, .. }
            | Self::ChangePassword { actor }
            | Self::Deactivate { actor, .. }
            | Self::Reactivate { actor }
            | Self::Lock { actor, .. }
            | Self::Unlock { actor }
            | Self::AssignRole { actor, .. }
            | Self::RevokeRole { actor, .. }
            | Self::RecordLogin { actor, .. }
            | Self::EnableMfa { actor }
            | Self::DisableMfa { actor }
            | Self::RegenerateRecoveryCodes { actor }
            | Self::EndSession { actor, .. } => *actor,
        }
    }
}

/// `user.created` v1: the seed's fields plus the profile and roles.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserCreated {
    pub user_id: Uuid,
    pub email: Email,
    pub first_name: Name,
    pub last_name: Name,
    pub organization_id: Uuid,
    pub phone: Option<Phone>,
    pub time_zone: TimeZone,
    pub preferences: Preferences,
    pub roles: Vec<String>,
    pub status: UserStatus,
}

/// `user.invitation.accepted` v1: the invited user set a password.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InvitationAccepted {
    pub user_id: Uuid,
}

/// `user.profile.updated` v1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProfileUpdated {
    pub user_id: Uuid,
    pub first_name: Name,
    pub last_name: Name,
    pub phone: Option<Phone>,
    pub time_zone: TimeZone,
    pub preferences: Preferences,
}

/// `user.email.changed` v1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EmailChanged {
    pub user_id: Uuid,
    pub email: Email,
}

/// `user.password.changed` v1 (the hash stays in the vault).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PasswordChanged {
    pub user_id: Uuid,
}

/// `user.deactivated` v1 (the seed's `deleteUser`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserDeactivated {
    pub user_id: Uuid,
    pub reason: Option<String>,
}

/// `user.reactivated` v1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserReactivated {
    pub user_id: Uuid,
}

/// `user.locked` v1 (`lockUser`, or too many failed sign-ins).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserLocked {
    pub user_id: Uuid,
    pub reason: String,
    pub until: Option<DateTime<Utc>>,
}

/// `user.unlocked` v1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserUnlocked {
    pub user_id: Uuid,
}

/// `user.role.assigned` / `user.role.revoked` v1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoleChanged {
    pub user_id: Uuid,
    pub role: String,
}

/// `user.authenticated` v1: the seed's fields plus the login statistics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserAuthenticated {
    pub user_id: Uuid,
    pub login_method: LoginMethod,
    pub ip_address: String,
    pub user_agent: String,
    pub at: DateTime<Utc>,
    /// Successful sign-ins so far, this one included.
    pub login_count: u64,
}

/// `user.mfa.enabled` / `user.mfa.disabled` /
/// `user.mfa.recovery_codes.regenerated` v1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MfaChanged {
    pub user_id: Uuid,
    /// Always `totp` for now.
    pub method: String,
}

/// `user.session.ended` v1: a refresh-token family was revoked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionEnded {
    pub user_id: Uuid,
    /// The refresh-token family (never a token).
    pub family_id: Uuid,
    pub reason: SessionEnd,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", content = "data")]
pub enum UserEvent {
    #[serde(rename = "user.created")]
    Created(UserCreated),
    #[serde(rename = "user.invitation.accepted")]
    InvitationAccepted(InvitationAccepted),
    #[serde(rename = "user.profile.updated")]
    ProfileUpdated(ProfileUpdated),
    #[serde(rename = "user.email.changed")]
    EmailChanged(EmailChanged),
    #[serde(rename = "user.password.changed")]
    PasswordChanged(PasswordChanged),
    #[serde(rename = "user.deactivated")]
    Deactivated(UserDeactivated),
    #[serde(rename = "user.reactivated")]
    Reactivated(UserReactivated),
    #[serde(rename = "user.locked")]
    Locked(UserLocked),
    #[serde(rename = "user.unlocked")]
    Unlocked(UserUnlocked),
    #[serde(rename = "user.role.assigned")]
    RoleAssigned(RoleChanged),
    #[serde(rename = "user.role.revoked")]
    RoleRevoked(RoleChanged),
    #[serde(rename = "user.authenticated")]
    Authenticated(UserAuthenticated),
    #[serde(rename = "user.mfa.enabled")]
    MfaEnabled(MfaChanged),
    #[serde(rename = "user.mfa.disabled")]
    MfaDisabled(MfaChanged),
    #[serde(rename = "user.mfa.recovery_codes.regenerated")]
    RecoveryCodesRegenerated(MfaChanged),
    #[serde(rename = "user.session.ended")]
    SessionEnded(SessionEnded),
}

impl UserEvent {
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Created(_) => "user.created",
            Self::InvitationAccepted(_) => "user.invitation.accepted",
            Self::ProfileUpdated(_) => "user.profile.updated",
            Self::EmailChanged(_) => "user.email.changed",
            Self::PasswordChanged(_) => "user.password.changed",
            Self::Deactivated(_) => "user.deactivated",
            Self::Reactivated(_) => "user.reactivated",
            Self::Locked(_) => "user.locked",
            Self::Unlocked(_) => "user.unlocked",
            Self::RoleAssigned(_) => "user.role.assigned",
            Self::RoleRevoked(_) => "user.role.revoked",
            Self::Authenticated(_) => "user.authenticated",
            Self::MfaEnabled(_) => "user.mfa.enabled",
            Self::MfaDisabled(_) => "user.mfa.disabled",
            Self::RecoveryCodesRegenerated(_) => "user.mfa.recovery_codes.regenerated",
            Self::SessionEnded(_) => "user.session.ended",
        }
    }
}

impl DomainEvent for UserEvent {
    fn event_type(&self) -> String {
        self.type_name().to_owned()
    }

    fn event_version(&self) -> String {
        SCHEMA_VERSION.to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    #[error("user not found")]
    NotFound,
    #[error("a user with this id already exists")]
    AlreadyExists,
    #[error("the user is deactivated")]
    Deactivated,
    #[error("the user is already deactivated")]
    AlreadyDeactivated,
    #[error("the user is not deactivated")]
    NotDeactivated,
    #[error("the user is already locked")]
    AlreadyLocked,
    #[error("the user is not locked")]
    NotLocked,
    #[error("the user has not accepted the invitation yet")]
    Invited,
    #[error("the invitation has already been accepted")]
    NotInvited,
    #[error("the user already holds role {0}")]
    RoleAlreadyAssigned(String),
    #[error("the user does not hold role {0}")]
    RoleNotAssigned(String),
    #[error("a user holds at most {MAX_ROLES} roles")]
    TooManyRoles,
    #[error("a user must hold at least one role")]
    LastRole,
    #[error("multi-factor authentication is already enabled")]
    MfaAlreadyEnabled,
    #[error("multi-factor authentication is not enabled")]
    MfaNotEnabled,
    #[error("a reason must be 1 to {MAX_REASON_CHARS} characters")]
    InvalidReason,
    #[error("a temporary lock must end in the future")]
    LockInPast,
    #[error("you cannot deactivate or lock yourself")]
    SelfAction,
}

impl UserError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound => "user_not_found",
            Self::AlreadyExists => "user_already_exists",
            Self::Deactivated => "user_deactivated",
            Self::AlreadyDeactivated => "user_already_deactivated",
            Self::NotDeactivated => "user_not_deactivated",
            Self::AlreadyLocked => "user_already_locked",
            Self::NotLocked => "user_not_locked",
            Self::Invited => "user_invited",
            Self::NotInvited => "user_not_invited",
            Self::RoleAlreadyAssigned(_) => "role_already_assigned",
            Self::RoleNotAssigned(_) => "role_not_assigned",
            Self::TooManyRoles => "too_many_roles",
            Self::LastRole => "last_role",
            Self::MfaAlreadyEnabled => "mfa_already_enabled",
            Self::MfaNotEnabled => "mfa_not_enabled",
            Self::InvalidReason => "invalid_reason",
            Self::LockInPast => "lock_in_past",
            Self::SelfAction => "self_action",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub state: Option<UserState>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserState {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub email: Email,
    pub profile: Profile,
    pub status: UserStatus,
    pub lock: Option<Lock>,
    pub roles: BTreeSet<String>,
    pub mfa_enabled: bool,
    pub last_login_at: Option<DateTime<Utc>>,
    pub login_count: u64,
}

impl UserState {
    /// Locked at `now`: an indefinite lock, or a temporary one not yet over.
    pub fn locked_at(&self, now: DateTime<Utc>) -> Option<&Lock> {
        self.lock
            .as_ref()
            .filter(|l| l.until.is_none_or(|until| until > now))
    }
}

fn reason(raw: Option<String>) -> Result<Option<String>, UserError> {
    match raw.map(|r| r.trim().to_owned()) {
        None => Ok(None),
        Some(r) if r.is_empty() || r.chars().count() > MAX_REASON_CHARS => {
            Err(UserError::InvalidReason)
        }
        Some(r) => Ok(Some(r)),
    }
}

impl User {
    pub fn visible_to(&self, actor: &Actor) -> Option<&UserState> {
        self.state
            .as_ref()
            .filter(|s| s.organization_id == actor.organization_id)
    }

    pub fn decide(&self, command: UserCommand) -> Result<Vec<UserEvent>, UserError> {
        let actor = command.actor();
        if let UserCommand::Create {
            user_id,
            email,
            profile,
            roles,
            with_password,
            ..
        } = command
        {
            if self.state.is_some() {
                return Err(UserError::AlreadyExists);
            }
            if roles.is_empty() {
                return Err(UserError::LastRole);
            }
            if roles.len() > MAX_ROLES {
                return Err(UserError::TooManyRoles);
            }
            return Ok(vec![UserEvent::Created(UserCreated {
                user_id,
                email,
                first_name: profile.first_name,
                last_name: profile.last_name,
                organization_id: actor.organization_id,
                phone: profile.phone,
                time_zone: profile.time_zone,
                preferences: profile.preferences,
                roles: roles.into_iter().collect(),
                status: if with_password {
                    UserStatus::Active
                } else {
                    UserStatus::Invited
                },
            })]);
        }
        let state = self.visible_to(&actor).ok_or(UserError::NotFound)?;
        let user_id = state.id;
        let not_deactivated = || {
            if state.status == UserStatus::Deactivated {
                Err(UserError::Deactivated)
            } else {
                Ok(())
            }
        };
        let mfa = || MfaChanged {
            user_id,
            method: "totp".to_owned(),
        };
        Ok(match command {
            UserCommand::Create { .. } => vec![],
            UserCommand::AcceptInvitation { .. } => {
                if state.status != UserStatus::Invited {
                    return Err(UserError::NotInvited);
                }
                vec![UserEvent::InvitationAccepted(InvitationAccepted {
                    user_id,
                })]
            }
            UserCommand::UpdateProfile { profile, .. } => {
                not_deactivated()?;
                if state.profile == profile {
                    vec![]
                } else {
                    vec![UserEvent::ProfileUpdated(ProfileUpdated {
                        user_id,
                        first_name: profile.first_name,
                        last_name: profile.last_name,
                        phone: profile.phone,
                        time_zone: profile.time_zone,
                        preferences: profile.preferences,
                    })]
                }
            }
            UserCommand::ChangeEmail { email, .. } => {
                not_deactivated()?;
                if state.email == email {
                    vec![]
                } else {
                    vec![UserEvent::EmailChanged(EmailChanged { user_id, email })]
                }
            }
            UserCommand::ChangePassword { .. } => {
                not_deactivated()?;
                if state.status == UserStatus::Invited {
                    return Err(UserError::Invited);
                }
                vec![UserEvent::PasswordChanged(PasswordChanged { user_id })]
            }
            UserCommand::Deactivate { reason: r, .. } => {
                if actor.user_id == user_id {
                    return Err(UserError::SelfAction);
                }
                if state.status == UserStatus::Deactivated {
                    return Err(UserError::AlreadyDeactivated);
                }
                vec![UserEvent::Deactivated(UserDeactivated {
                    user_id,
                    reason: reason(r)?,
                })]
            }
            UserCommand::Reactivate { .. } => {
                if state.status != UserStatus::Deactivated {
                    return Err(UserError::NotDeactivated);
                }
                vec![UserEvent::Reactivated(UserReactivated { user_id })]
            }
            UserCommand::Lock {
                reason: r, until, ..
            } => {
                if actor.user_id == user_id {
                    return Err(UserError::SelfAction);
                }
                not_deactivated()?;
                if until.is_some_and(|u| u <= Utc::now()) {
                    return Err(UserError::LockInPast);
                }
                if state.locked_at(Utc::now()).is_some() {
                    return Err(UserError::AlreadyLocked);
                }
                vec![UserEvent::Locked(UserLocked {
                    user_id,
                    reason: reason(Some(r))?.unwrap_or_default(),
                    until,
                })]
            }
            UserCommand::Unlock { .. } => {
                if state.locked_at(Utc::now()).is_none() {
                    return Err(UserError::NotLocked);
                }
                vec![UserEvent::Unlocked(UserUnlocked { user_id })]
            }
            UserCommand::AssignRole { role, .. } => {
                not_deactivated()?;
                if state.roles.contains(&role) {
                    return Err(UserError::RoleAlreadyAssigned(role));
                }
                if state.roles.len() >= MAX_ROLES {
                    return Err(UserError::TooManyRoles);
                }
                vec![UserEvent::RoleAssigned(RoleChanged { user_id, role })]
            }
            UserCommand::RevokeRole { role, .. } => {
                if !state.roles.contains(&role) {
                    return Err(UserError::RoleNotAssigned(role));
                }
                if state.roles.len() == 1 {
                    return Err(UserError::LastRole);
                }
                vec![UserEvent::RoleRevoked(RoleChanged { user_id, role })]
            }
            UserCommand::RecordLogin {
                method,
                ip_address,
                user_agent,
                at,
                ..
            } => {
                not_deactivated()?;
                vec![UserEvent::Authenticated(UserAuthenticated {
                    user_id,
                    login_method: method,
                    ip_address,
                    user_agent,
                    at,
                    login_count: state.login_count + 1,
                })]
            }
            UserCommand::EnableMfa { .. } => {
                not_deactivated()?;
                if state.mfa_enabled {
                    return Err(UserError::MfaAlreadyEnabled);
                }
                vec![UserEvent::MfaEnabled(mfa())]
            }
            UserCommand::DisableMfa { .. } => {
                if !state.mfa_enabled {
                    return Err(UserError::MfaNotEnabled);
                }
                vec![UserEvent::MfaDisabled(mfa())]
            }
            UserCommand::RegenerateRecoveryCodes { .. } => {
                if !state.mfa_enabled {
                    return Err(UserError::MfaNotEnabled);
                }
                vec![UserEvent::RecoveryCodesRegenerated(mfa())]
            }
            UserCommand::EndSession {
                family_id, reason, ..
            } => vec![UserEvent::SessionEnded(SessionEnded {
                user_id,
                family_id,
                reason,
            })],
        })
    }
}

impl Aggregate for User {
    const TYPE: &'static str = AGGREGATE_TYPE;
    type Command = UserCommand;
    type Event = UserEvent;
    type Error = UserError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        if let UserEvent::Created(e) = event {
            self.state = Some(UserState {
                id: e.user_id,
                organization_id: e.organization_id,
                email: e.email,
                profile: Profile {
                    first_name: e.first_name,
                    last_name: e.last_name,
                    phone: e.phone,
                    time_zone: e.time_zone,
                    preferences: e.preferences,
                },
                status: e.status,
                lock: None,
                roles: e.roles.into_iter().collect(),
                mfa_enabled: false,
                last_login_at: None,
                login_count: 0,
            });
            return;
        }
        let Some(s) = self.state.as_mut() else {
            return;
        };
        match event {
            UserEvent::Created(_)
            | UserEvent::PasswordChanged(_)
            | UserEvent::RecoveryCodesRegenerated(_)
            | UserEvent::SessionEnded(_) => {}
            UserEvent::InvitationAccepted(_) | UserEvent::Reactivated(_) => {
                s.status = UserStatus::Active;
            }
            UserEvent::ProfileUpdated(e) => {
                s.profile = Profile {
                    first_name: e.first_name,
                    last_name: e.last_name,
                    phone: e.phone,
                    time_zone: e.time_zone,
                    preferences: e.preferences,
                };
            }
            UserEvent::EmailChanged(e) => s.email = e.email,
            UserEvent::Deactivated(_) => s.status = UserStatus::Deactivated,
            UserEvent::Locked(e) => {
                s.lock = Some(Lock {
                    reason: e.reason,
                    until: e.until,
                });
            }
            UserEvent::Unlocked(_) => s.lock = None,
            UserEvent::RoleAssigned(e) => {
                s.roles.insert(e.role);
            }
            UserEvent::RoleRevoked(e) => {
                s.roles.remove(&e.role);
            }
            UserEvent::Authenticated(e) => {
                s.last_login_at = Some(e.at);
                s.login_count = e.login_count;
            }
            UserEvent::MfaEnabled(_) => s.mfa_enabled = true,
            UserEvent::MfaDisabled(_) => s.mfa_enabled = false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admin() -> Actor {
        Actor {
            organization_id: Uuid::from_u128(1),
            user_id: Uuid::from_u128(2),
        }
    }

    fn profile() -> Profile {
        Profile {
            first_name: Name::parse("/f", "Ada").unwrap(),
            last_name: Name::parse("/l", "Lovelace").unwrap(),
            phone: None,
            time_zone: TimeZone::utc(),
            preferences: Preferences::default(),
        }
    }

    fn run(user: &mut User, command: UserCommand) -> Result<Vec<&'static str>, UserError> {
        let events = user.decide(command)?;
        let names = events.iter().map(UserEvent::type_name).collect();
        for e in events {
            user.apply(e);
        }
        Ok(names)
    }

    fn created(with_password: bool) -> User {
        let mut user = User::default();
        run(
            &mut user,
            UserCommand::Create {
                actor: admin(),
                user_id: Uuid::from_u128(3),
                email: Email::parse("/e", "ada@example.com").unwrap(),
                profile: profile(),
                roles: BTreeSet::from(["member".to_owned()]),
                with_password,
            },
        )
        .unwrap();
        user
    }

    #[test]
    fn invitation_then_acceptance() {
        let mut user = created(false);
        assert_eq!(user.state.as_ref().unwrap().status, UserStatus::Invited);
        assert_eq!(
            run(&mut user, UserCommand::ChangePassword { actor: admin() }),
            Err(UserError::Invited)
        );
        run(&mut user, UserCommand::AcceptInvitation { actor: admin() }).unwrap();
        assert_eq!(user.state.as_ref().unwrap().status, UserStatus::Active);
        assert_eq!(
            run(&mut user, UserCommand::AcceptInvitation { actor: admin() }),
            Err(UserError::NotInvited)
        );
    }

    #[test]
    fn login_statistics_count_up() {
        let mut user = created(true);
        for n in 1..=3 {
            let at = Utc::now();
            let events = user
                .decide(UserCommand::RecordLogin {
                    actor: admin(),
                    method: LoginMethod::Password,
                    ip_address: "203.0.113.1".into(),
                    user_agent: "test".into(),
                    at,
                })
                .unwrap();
            match &events[0] {
                UserEvent::Authenticated(e) => assert_eq!(e.login_count, n),
                other => panic!("unexpected {other:?}"),
            }
            for e in events {
                user.apply(e);
            }
            assert_eq!(user.state.as_ref().unwrap().last_login_at, Some(at));
        }
    }

    #[test]
    fn temporary_lock_expires_and_indefinite_lock_needs_unlock() {
        let mut user = created(true);
        let soon = Utc::now() + chrono::Duration::minutes(15);
        run(
            &mut user,
            UserCommand::Lock {
                actor: admin(),
                reason: "too many failed sign-in attempts".into(),
                until: Some(soon),
            },
        )
        .unwrap();
        let state = user.state.clone().unwrap();
        assert!(state.locked_at(Utc::now()).is_some());
        assert!(
            state
                .locked_at(soon + chrono::Duration::seconds(1))
                .is_none()
        );
        assert_eq!(
            run(
                &mut user,
                UserCommand::Lock {
                    actor: admin(),
                    reason: "again".into(),
                    until: None
                }
            ),
            Err(UserError::AlreadyLocked)
        );
        run(&mut user, UserCommand::Unlock { actor: admin() }).unwrap();
        assert_eq!(
            run(&mut user, UserCommand::Unlock { actor: admin() }),
            Err(UserError::NotLocked)
        );
        assert_eq!(
            run(
                &mut user,
                UserCommand::Lock {
                    actor: admin(),
                    reason: "  ".into(),
                    until: None
                }
            ),
            Err(UserError::InvalidReason)
        );
        assert_eq!(
            run(
                &mut user,
                UserCommand::Lock {
                    actor: admin(),
                    reason: "x".into(),
                    until: Some(Utc::now() - chrono::Duration::minutes(1))
                }
            ),
            Err(UserError::LockInPast)
        );
    }

    #[test]
    fn deactivation_keeps_history_and_blocks_changes() {
        let mut user = created(true);
        run(
            &mut user,
            UserCommand::Deactivate {
                actor: admin(),
                reason: Some("left the company".into()),
            },
        )
        .unwrap();
        assert_eq!(
            run(
                &mut user,
                UserCommand::UpdateProfile {
                    actor: admin(),
                    profile: profile()
                }
            ),
            Err(UserError::Deactivated)
        );
        assert_eq!(
            run(
                &mut user,
                UserCommand::RecordLogin {
                    actor: admin(),
                    method: LoginMethod::Password,
                    ip_address: "x".into(),
                    user_agent: "y".into(),
                    at: Utc::now()
                }
            ),
            Err(UserError::Deactivated)
        );
        run(&mut user, UserCommand::Reactivate { actor: admin() }).unwrap();
        assert_eq!(user.state.as_ref().unwrap().status, UserStatus::Active);
    }

    #[test]
    fn nobody_deactivates_or_locks_themselves() {
        let mut user = created(true);
        let me = Actor {
            organization_id: Uuid::from_u128(1),
            user_id: Uuid::from_u128(3),
        };
        assert_eq!(
            run(
                &mut user,
                UserCommand::Deactivate {
                    actor: me,
                    reason: None
                }
            ),
            Err(UserError::SelfAction)
        );
    }

    #[test]
    fn roles_keep_at_least_one() {
        let mut user = created(true);
        let assign = |role: &str| UserCommand::AssignRole {
            actor: admin(),
            role: role.into(),
        };
        let revoke = |role: &str| UserCommand::RevokeRole {
            actor: admin(),
            role: role.into(),
        };
        assert_eq!(run(&mut user, revoke("member")), Err(UserError::LastRole));
        run(&mut user, assign("manager")).unwrap();
        assert_eq!(
            run(&mut user, assign("manager")),
            Err(UserError::RoleAlreadyAssigned("manager".into()))
        );
        run(&mut user, revoke("member")).unwrap();
        assert_eq!(
            user.state.as_ref().unwrap().roles,
            BTreeSet::from(["manager".to_owned()])
        );
    }

    #[test]
    fn mfa_toggles_once() {
        let mut user = created(true);
        assert_eq!(
            run(&mut user, UserCommand::DisableMfa { actor: admin() }),
            Err(UserError::MfaNotEnabled)
        );
        run(&mut user, UserCommand::EnableMfa { actor: admin() }).unwrap();
        assert_eq!(
            run(&mut user, UserCommand::EnableMfa { actor: admin() }),
            Err(UserError::MfaAlreadyEnabled)
        );
        assert!(user.state.as_ref().unwrap().mfa_enabled);
    }

    #[test]
    fn other_organizations_get_not_found() {
        let mut user = created(true);
        let stranger = Actor {
            organization_id: Uuid::from_u128(42),
            user_id: Uuid::from_u128(2),
        };
        assert_eq!(
            run(&mut user, UserCommand::Unlock { actor: stranger }),
            Err(UserError::NotFound)
        );
    }
}
