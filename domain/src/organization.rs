//! The `Organization` aggregate: the tenant. Sign-up creates it together
//! with its first owner. It holds the organization's settings, its security
//! policy and the custom roles it defines.

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::envelope::Actor;
use crate::permissions::{Grant, RoleDefinition, is_built_in, is_identifier};
use crate::values::{Currency, FieldError, Name, TaxNumber, TimeZone};

pub const AGGREGATE_TYPE: &str = "organization";
pub const SCHEMA_VERSION: u32 = 1;
/// Most custom roles one organization may define.
pub const MAX_CUSTOM_ROLES: usize = 50;

/// Tax settings used by quotes and invoices.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaxSettings {
    /// The organization's own tax registration (GST/VAT number).
    pub registration_number: Option<TaxNumber>,
    /// Default tax rate in basis points (1500 = 15%).
    pub default_rate_basis_points: u32,
    /// Whether entered prices include tax.
    pub prices_include_tax: bool,
}

/// Settings every other part of the system reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrganizationSettings {
    pub default_currency: Currency,
    pub time_zone: TimeZone,
    /// Month (1-12) in which the fiscal year starts.
    pub fiscal_year_start_month: u8,
    pub tax: TaxSettings,
    #[serde(default)]
    pub quotes: QuoteSettings,
}

/// How the organization quotes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuoteSettings {
    /// Quotes whose total is above this need an approver (0: every quote).
    pub approval_threshold: rust_decimal::Decimal,
    /// Days a new quote is valid by default.
    pub validity_days: u16,
    /// The rate card used when a customer has none of its own.
    pub default_rate_card_id: Option<Uuid>,
}

impl Default for QuoteSettings {
    fn default() -> Self {
        Self {
            approval_threshold: rust_decimal::Decimal::ZERO,
            validity_days: 30,
            default_rate_card_id: None,
        }
    }
}

impl OrganizationSettings {
    pub fn validate_month(pointer: &str, month: i64) -> Result<u8, FieldError> {
        u8::try_from(month)
            .ok()
            .filter(|m| (1..=12).contains(m))
            .ok_or_else(|| FieldError::new(pointer, "out_of_range", "must be a month, 1 to 12"))
    }

    pub fn validate_rate(pointer: &str, basis_points: i64) -> Result<u32, FieldError> {
        u32::try_from(basis_points)
            .ok()
            .filter(|r| *r <= 10_000)
            .ok_or_else(|| {
                FieldError::new(
                    pointer,
                    "out_of_range",
                    "must be 0 to 10000 basis points (0% to 100%)",
                )
            })
    }
}

/// Security rules chosen by the organization.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecurityPolicy {
    /// Changing email or password, disabling MFA and assigning roles need a
    /// token obtained with MFA (`mfa: true`).
    pub require_mfa_for_sensitive_operations: bool,
}

/// A custom role as defined by an organization.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CustomRole {
    pub key: String,
    pub name: Name,
    pub description: Option<String>,
    pub grants: Vec<Grant>,
}

impl CustomRole {
    /// Longest role name, in characters.
    pub const NAME_MAX_CHARS: usize = 100;
    /// Longest role description, in characters.
    pub const DESCRIPTION_MAX_CHARS: usize = 500;

    /// Checks the key, description and grants of a definition.
    pub fn validate(
        key: &str,
        name: &str,
        description: Option<String>,
        grants: Vec<Grant>,
    ) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let name = Name::parse_bounded("/name", name, Self::NAME_MAX_CHARS)
            .map_err(|e| errors.push(e))
            .ok();
        if !is_identifier(key) {
            errors.push(FieldError::new(
                "/key",
                "invalid_identifier",
                "must be 1 to 50 lowercase letters, digits, `_` or `-`, starting with a letter",
            ));
        } else if is_built_in(key) {
            errors.push(FieldError::new(
                "/key",
                "reserved",
                "is the key of a built-in role",
            ));
        }
        let description = description
            .map(|d| d.trim().to_owned())
            .filter(|d| !d.is_empty());
        if description
            .as_ref()
            .is_some_and(|d| d.chars().count() > Self::DESCRIPTION_MAX_CHARS)
        {
            errors.push(FieldError::new(
                "/description",
                "too_long",
                format!("must be at most {} characters", Self::DESCRIPTION_MAX_CHARS),
            ));
        }
        if let Err(more) = Grant::validate_all("/grants", &grants) {
            errors.extend(more);
        }
        match name {
            Some(name) if errors.is_empty() => Ok(Self {
                key: key.to_owned(),
                name,
                description,
                grants,
            }),
            _ => Err(errors),
        }
    }

    pub fn definition(&self) -> RoleDefinition {
        RoleDefinition {
            key: self.key.clone(),
            name: self.name.as_str().to_owned(),
            description: self.description.clone(),
            grants: self.grants.clone(),
            built_in: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum OrganizationCommand {
    Create {
        actor: Actor,
        name: Name,
        settings: OrganizationSettings,
    },
    Rename {
        actor: Actor,
        name: Name,
    },
    ChangeSettings {
        actor: Actor,
        settings: OrganizationSettings,
    },
    ChangeSecurityPolicy {
        actor: Actor,
        policy: SecurityPolicy,
    },
    /// Defines a new custom role or replaces an existing one's definition.
    PutRole {
        actor: Actor,
        role: CustomRole,
    },
    RemoveRole {
        actor: Actor,
        key: String,
    },
}

impl OrganizationCommand {
    pub fn actor(&self) -> Actor {
        match self {
            Self::Create { actor, .. }
            | Self::Rename { actor, .. }
            | Self::ChangeSettings { actor, .. }
            | Self::ChangeSecurityPolicy { actor, .. }
            | Self::PutRole { actor, .. }
            | Self::RemoveRole { actor, .. } => *actor,
        }
    }
}

/// `organization.created` v1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrganizationCreated {
    pub organization_id: Uuid,
    pub name: Name,
    pub settings: OrganizationSettings,
    /// The user who signed up (the first owner).
    pub created_by: Uuid,
}

/// `organization.renamed` v1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrganizationRenamed {
    pub organization_id: Uuid,
    pub name: Name,
}

/// `organization.settings.changed` v1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrganizationSettingsChanged {
    pub organization_id: Uuid,
    pub settings: OrganizationSettings,
}

/// `organization.security_policy.changed` v1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecurityPolicyChanged {
    pub organization_id: Uuid,
    pub policy: SecurityPolicy,
}

/// `organization.role.defined` v1 (new role or new definition of a role).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoleDefined {
    pub organization_id: Uuid,
    pub role: CustomRole,
}

/// `organization.role.removed` v1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoleRemoved {
    pub organization_id: Uuid,
    pub key: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", content = "data")]
pub enum OrganizationEvent {
    #[serde(rename = "organization.created")]
    Created(OrganizationCreated),
    #[serde(rename = "organization.renamed")]
    Renamed(OrganizationRenamed),
    #[serde(rename = "organization.settings.changed")]
    SettingsChanged(OrganizationSettingsChanged),
    #[serde(rename = "organization.security_policy.changed")]
    SecurityPolicyChanged(SecurityPolicyChanged),
    #[serde(rename = "organization.role.defined")]
    RoleDefined(RoleDefined),
    #[serde(rename = "organization.role.removed")]
    RoleRemoved(RoleRemoved),
}

impl OrganizationEvent {
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Created(_) => "organization.created",
            Self::Renamed(_) => "organization.renamed",
            Self::SettingsChanged(_) => "organization.settings.changed",
            Self::SecurityPolicyChanged(_) => "organization.security_policy.changed",
            Self::RoleDefined(_) => "organization.role.defined",
            Self::RoleRemoved(_) => "organization.role.removed",
        }
    }
}

impl DomainEvent for OrganizationEvent {
    fn event_type(&self) -> String {
        self.type_name().to_owned()
    }

    fn event_version(&self) -> String {
        SCHEMA_VERSION.to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrganizationError {
    #[error("organization not found")]
    NotFound,
    #[error("the organization already exists")]
    AlreadyExists,
    #[error("role {0} is not defined by this organization")]
    RoleNotFound(String),
    #[error("an organization may define at most {MAX_CUSTOM_ROLES} custom roles")]
    TooManyRoles,
}

impl OrganizationError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound => "organization_not_found",
            Self::AlreadyExists => "organization_already_exists",
            Self::RoleNotFound(_) => "role_not_found",
            Self::TooManyRoles => "too_many_roles",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Organization {
    pub state: Option<OrganizationState>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrganizationState {
    pub id: Uuid,
    pub name: Name,
    pub settings: OrganizationSettings,
    pub policy: SecurityPolicy,
    pub roles: Vec<CustomRole>,
}

impl Organization {
    /// The state when `actor` belongs to this organization.
    pub fn visible_to(&self, actor: &Actor) -> Option<&OrganizationState> {
        self.state
            .as_ref()
            .filter(|s| s.id == actor.organization_id)
    }

    /// A role definition by key: built-in or custom.
    pub fn role(&self, key: &str) -> Option<RoleDefinition> {
        crate::permissions::built_in_role(key).or_else(|| {
            self.state
                .as_ref()
                .and_then(|s| s.roles.iter().find(|r| r.key == key))
                .map(CustomRole::definition)
        })
    }

    pub fn decide(
        &self,
        command: OrganizationCommand,
    ) -> Result<Vec<OrganizationEvent>, OrganizationError> {
        let actor = command.actor();
        if let OrganizationCommand::Create { name, settings, .. } = command {
            if self.state.is_some() {
                return Err(OrganizationError::AlreadyExists);
            }
            return Ok(vec![OrganizationEvent::Created(OrganizationCreated {
                organization_id: actor.organization_id,
                name,
                settings,
                created_by: actor.user_id,
            })]);
        }
        let state = self.visible_to(&actor).ok_or(OrganizationError::NotFound)?;
        let organization_id = state.id;
        Ok(match command {
            OrganizationCommand::Create { .. } => vec![],
            OrganizationCommand::Rename { name, .. } => {
                if state.name == name {
                    vec![]
                } else {
                    vec![OrganizationEvent::Renamed(OrganizationRenamed {
                        organization_id,
                        name,
                    })]
                }
            }
            OrganizationCommand::ChangeSettings { settings, .. } => {
                if state.settings == settings {
                    vec![]
                } else {
                    vec![OrganizationEvent::SettingsChanged(
                        OrganizationSettingsChanged {
                            organization_id,
                            settings,
                        },
                    )]
                }
            }
            OrganizationCommand::ChangeSecurityPolicy { policy, .. } => {
                if state.policy == policy {
                    vec![]
                } else {
                    vec![OrganizationEvent::SecurityPolicyChanged(
                        SecurityPolicyChanged {
                            organization_id,
                            policy,
                        },
                    )]
                }
            }
            OrganizationCommand::PutRole { role, .. } => {
                match state.roles.iter().find(|r| r.key == role.key) {
                    Some(existing) if *existing == role => vec![],
                    None if state.roles.len() >= MAX_CUSTOM_ROLES => {
                        return Err(OrganizationError::TooManyRoles);
                    }
                    _ => vec![OrganizationEvent::RoleDefined(RoleDefined {
                        organization_id,
                        role,
                    })],
                }
            }
            OrganizationCommand::RemoveRole { key, .. } => {
                if !state.roles.iter().any(|r| r.key == key) {
                    return Err(OrganizationError::RoleNotFound(key));
                }
                vec![OrganizationEvent::RoleRemoved(RoleRemoved {
                    organization_id,
                    key,
                })]
            }
        })
    }
}

impl Aggregate for Organization {
    const TYPE: &'static str = AGGREGATE_TYPE;
    type Command = OrganizationCommand;
    type Event = OrganizationEvent;
    type Error = OrganizationError;
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
        match event {
            OrganizationEvent::Created(e) => {
                self.state = Some(OrganizationState {
                    id: e.organization_id,
                    name: e.name,
                    settings: e.settings,
                    policy: SecurityPolicy::default(),
                    roles: Vec::new(),
                });
            }
            OrganizationEvent::Renamed(e) => {
                if let Some(s) = self.state.as_mut() {
                    s.name = e.name;
                }
            }
            OrganizationEvent::SettingsChanged(e) => {
                if let Some(s) = self.state.as_mut() {
                    s.settings = e.settings;
                }
            }
            OrganizationEvent::SecurityPolicyChanged(e) => {
                if let Some(s) = self.state.as_mut() {
                    s.policy = e.policy;
                }
            }
            OrganizationEvent::RoleDefined(e) => {
                if let Some(s) = self.state.as_mut() {
                    match s.roles.iter_mut().find(|r| r.key == e.role.key) {
                        Some(existing) => *existing = e.role,
                        None => s.roles.push(e.role),
                    }
                }
            }
            OrganizationEvent::RoleRemoved(e) => {
                if let Some(s) = self.state.as_mut() {
                    s.roles.retain(|r| r.key != e.key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::permissions::Operator;

    fn actor() -> Actor {
        Actor {
            organization_id: Uuid::from_u128(1),
            user_id: Uuid::from_u128(2),
        }
    }

    fn settings() -> OrganizationSettings {
        OrganizationSettings {
            default_currency: Currency::parse("/c", "NZD").unwrap(),
            time_zone: TimeZone::parse("/t", "Pacific/Auckland").unwrap(),
            fiscal_year_start_month: 4,
            tax: TaxSettings::default(),
            quotes: QuoteSettings::default(),
        }
    }

    fn created() -> Organization {
        let mut org = Organization::default();
        for e in org
            .decide(OrganizationCommand::Create {
                actor: actor(),
                name: Name::parse("/n", "Acme").unwrap(),
                settings: settings(),
            })
            .unwrap()
        {
            org.apply(e);
        }
        org
    }

    fn role(key: &str) -> CustomRole {
        CustomRole::validate(
            key,
            "Sales lead",
            Some("Leads sales".into()),
            vec![Grant::new("customers", "write").when(
                "country",
                Operator::Eq,
                serde_json::json!("NZ"),
            )],
        )
        .unwrap()
    }

    #[test]
    fn roles_are_defined_redefined_and_removed() {
        let mut org = created();
        let put = |r| OrganizationCommand::PutRole {
            actor: actor(),
            role: r,
        };
        let events = org.decide(put(role("sales-lead"))).unwrap();
        assert_eq!(events[0].type_name(), "organization.role.defined");
        for e in events {
            org.apply(e);
        }
        assert!(org.decide(put(role("sales-lead"))).unwrap().is_empty());
        assert!(org.role("sales-lead").is_some_and(|r| !r.built_in));
        assert!(org.role("auditor").is_some_and(|r| r.built_in));
        let removed = org
            .decide(OrganizationCommand::RemoveRole {
                actor: actor(),
                key: "sales-lead".into(),
            })
            .unwrap();
        for e in removed {
            org.apply(e);
        }
        assert!(org.role("sales-lead").is_none());
        assert_eq!(
            org.decide(OrganizationCommand::RemoveRole {
                actor: actor(),
                key: "sales-lead".into()
            }),
            Err(OrganizationError::RoleNotFound("sales-lead".into()))
        );
    }

    #[test]
    fn custom_roles_may_not_take_built_in_keys() {
        let errors = CustomRole::validate("admin", "Admin", None, vec![]).unwrap_err();
        assert_eq!(errors[0].code, "reserved");
        let errors = CustomRole::validate("Bad Key", "", None, vec![]).unwrap_err();
        let codes: Vec<&str> = errors.iter().map(|e| e.code).collect();
        assert_eq!(codes, ["required", "invalid_identifier"]);
    }

    #[test]
    fn other_organizations_see_nothing() {
        let org = created();
        let stranger = Actor {
            organization_id: Uuid::from_u128(99),
            user_id: Uuid::from_u128(2),
        };
        assert_eq!(
            org.decide(OrganizationCommand::Rename {
                actor: stranger,
                name: Name::parse("/n", "Mine").unwrap()
            }),
            Err(OrganizationError::NotFound)
        );
        assert!(org.visible_to(&stranger).is_none());
    }

    #[test]
    fn unchanged_settings_emit_nothing() {
        let org = created();
        assert!(
            org.decide(OrganizationCommand::ChangeSettings {
                actor: actor(),
                settings: settings()
            })
            .unwrap()
            .is_empty()
        );
        let mut other = settings();
        other.fiscal_year_start_month = 7;
        assert_eq!(
            org.decide(OrganizationCommand::ChangeSettings {
                actor: actor(),
                settings: other
            })
            .unwrap()[0]
                .type_name(),
            "organization.settings.changed"
        );
    }
}
