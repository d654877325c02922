//! The permission model of the architecture document: a permission is a
//! `resource` and an `action`, optionally narrowed by conditions evaluated
//! against a context (`IPermission` with `IPermissionCondition[]`).
//!
//! Roles grant permissions. Six roles are built in (owner, admin, manager,
//! member, accountant, auditor); an organization may define its own. The
//! access token carries the caller's roles and the `resource:action` strings
//! of its *unconditional* grants; conditional grants are evaluated by
//! [`evaluate`] against the request's context.
//!
//! Everything here is pure: the APIs gather the roles and the context, this
//! module decides.

use std::collections::BTreeSet;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::values::FieldError;

/// A permission the APIs check before running a command or query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Permission {
    pub resource: &'static str,
    pub action: &'static str,
}

impl Permission {
    pub const CUSTOMERS_READ: Self = Self::new("customers", "read");
    pub const CUSTOMERS_WRITE: Self = Self::new("customers", "write");
    pub const EVENTS_READ: Self = Self::new("events", "read");
    pub const USERS_READ: Self = Self::new("users", "read");
    pub const USERS_CREATE: Self = Self::new("users", "create");
    pub const USERS_UPDATE: Self = Self::new("users", "update");
    pub const USERS_DEACTIVATE: Self = Self::new("users", "deactivate");
    pub const USERS_LOCK: Self = Self::new("users", "lock");
    pub const ROLES_READ: Self = Self::new("roles", "read");
    pub const ROLES_MANAGE: Self = Self::new("roles", "manage");
    pub const ROLES_ASSIGN: Self = Self::new("roles", "assign");
    pub const ORGANIZATION_READ: Self = Self::new("organization", "read");
    pub const ORGANIZATION_UPDATE: Self = Self::new("organization", "update");

    pub const fn new(resource: &'static str, action: &'static str) -> Self {
        Self { resource, action }
    }

    /// True when `granted` (a token's permission list) allows this permission:
    /// an exact `resource:action`, `resource:*`, `*:action` or `*:*`.
    pub fn is_granted_by<S: AsRef<str>>(&self, granted: &[S]) -> bool {
        granted.iter().any(|p| {
            let Some((resource, action)) = p.as_ref().split_once(':') else {
                return false;
            };
            matches(resource, self.resource) && matches(action, self.action)
        })
    }
}

impl std::fmt::Display for Permission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.resource, self.action)
    }
}

fn matches(pattern: &str, value: &str) -> bool {
    pattern == "*" || pattern == value
}

/// How a condition compares the context's attribute with its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Operator {
    Eq,
    Ne,
    Lt,
    Lte,
    Gt,
    Gte,
    /// The attribute is one of the values (an array).
    In,
    /// The attribute (an array) contains the value.
    Contains,
}

/// `IPermissionCondition`: `context[attribute] <operator> value`.
///
/// A string value `$subject.id` or `$subject.organizationId` stands for the
/// caller's user or organization id, so that "only records the user owns" is
/// `{"attribute": "ownerId", "operator": "eq", "value": "$subject.id"}`.
/// A context without the attribute never satisfies the condition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Condition {
    pub attribute: String,
    pub operator: Operator,
    pub value: Value,
}

/// One permission a role grants (`IPermission`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Grant {
    /// A resource name or `*`.
    pub resource: String,
    /// An action name or `*`.
    pub action: String,
    /// All must hold; empty means unconditional.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

impl Grant {
    /// The most grants a role has.
    pub const MAX_PER_ROLE: usize = 100;
    /// The most conditions a grant has.
    pub const MAX_CONDITIONS: usize = 10;

    pub fn new(resource: &str, action: &str) -> Self {
        Self {
            resource: resource.to_owned(),
            action: action.to_owned(),
            conditions: Vec::new(),
        }
    }

    #[must_use]
    pub fn when(mut self, attribute: &str, operator: Operator, value: Value) -> Self {
        self.conditions.push(Condition {
            attribute: attribute.to_owned(),
            operator,
            value,
        });
        self
    }

    /// `resource:action`, the form carried in access tokens.
    pub fn key(&self) -> String {
        format!("{}:{}", self.resource, self.action)
    }

    pub fn covers(&self, resource: &str, action: &str) -> bool {
        matches(&self.resource, resource) && matches(&self.action, action)
    }

    /// Parses grants of a custom role definition, reporting every problem.
    pub fn validate_all(pointer: &str, grants: &[Grant]) -> Result<(), Vec<FieldError>> {
        let mut errors = Vec::new();
        if grants.len() > Self::MAX_PER_ROLE {
            errors.push(FieldError::new(
                pointer,
                "too_many",
                format!("a role has at most {} permissions", Self::MAX_PER_ROLE),
            ));
        }
        for (i, grant) in grants.iter().enumerate() {
            for (field, value) in [("resource", &grant.resource), ("action", &grant.action)] {
                if !is_identifier(value) && value != "*" {
                    errors.push(FieldError::new(
                        format!("{pointer}/{i}/{field}"),
                        "invalid_identifier",
                        "must be `*` or 1 to 50 lowercase letters, digits, `_` or `-`",
                    ));
                }
            }
            if grant.conditions.len() > Self::MAX_CONDITIONS {
                errors.push(FieldError::new(
                    format!("{pointer}/{i}/conditions"),
                    "too_many",
                    format!(
                        "a permission has at most {} conditions",
                        Self::MAX_CONDITIONS
                    ),
                ));
            }
            for (j, condition) in grant.conditions.iter().enumerate() {
                let at = format!("{pointer}/{i}/conditions/{j}");
                if condition.attribute.is_empty()
                    || condition.attribute.len() > 64
                    || !condition
                        .attribute
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
                {
                    errors.push(FieldError::new(
                        format!("{at}/attribute"),
                        "invalid_identifier",
                        "must be 1 to 64 letters, digits, `_` or `.`",
                    ));
                }
                let needs_array = condition.operator == Operator::In;
                let ordered = matches!(
                    condition.operator,
                    Operator::Lt | Operator::Lte | Operator::Gt | Operator::Gte
                );
                if needs_array && !condition.value.is_array() {
                    errors.push(FieldError::new(
                        format!("{at}/value"),
                        "invalid_type",
                        "`in` compares with an array of values",
                    ));
                }
                if ordered && !(condition.value.is_number() || condition.value.is_string()) {
                    errors.push(FieldError::new(
                        format!("{at}/value"),
                        "invalid_type",
                        "ordering operators compare with a number or a string",
                    ));
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

/// `a-z0-9_-`, 1 to 50 characters, starting with a letter.
pub fn is_identifier(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 50
        && value.starts_with(|c: char| c.is_ascii_lowercase())
        && value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// Who is asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subject {
    pub user_id: Uuid,
    pub organization_id: Uuid,
}

/// A role and what it grants.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoleDefinition {
    /// Stable key, e.g. `manager` or `sales-lead`.
    pub key: String,
    pub name: String,
    pub description: Option<String>,
    pub grants: Vec<Grant>,
    /// True for the six roles defined by the system.
    pub built_in: bool,
}

pub const BUILT_IN_ROLES: [&str; 6] = [
    "owner",
    "admin",
    "manager",
    "member",
    "accountant",
    "auditor",
];

pub fn is_built_in(role: &str) -> bool {
    BUILT_IN_ROLES.contains(&role)
}

fn role(key: &str, name: &str, description: &str, grants: Vec<Grant>) -> RoleDefinition {
    RoleDefinition {
        key: key.to_owned(),
        name: name.to_owned(),
        description: Some(description.to_owned()),
        grants,
        built_in: true,
    }
}

fn subject_id() -> Value {
    Value::String(SUBJECT_ID.to_owned())
}

/// Placeholder for the caller's user id in condition values.
pub const SUBJECT_ID: &str = "$subject.id";
/// Placeholder for the caller's organization id in condition values.
pub const SUBJECT_ORGANIZATION: &str = "$subject.organizationId";

/// The built-in role `key`, if there is one.
pub fn built_in_role(key: &str) -> Option<RoleDefinition> {
    let g = Grant::new;
    let reads = |resources: &[&str]| -> Vec<Grant> {
        resources.iter().map(|r| Grant::new(r, "read")).collect()
    };
    Some(match key {
        "owner" => role(
            "owner",
            "Owner",
            "Everything, including assigning the owner role.",
            vec![g("*", "*")],
        ),
        "admin" => role(
            "admin",
            "Administrator",
            "Everything except assigning or revoking the owner role.",
            vec![g("*", "*")],
        ),
        "manager" => role(
            "manager",
            "Manager",
            "Runs customers, quotes, projects and time; reads people and history.",
            [
                vec![
                    g("customers", "*"),
                    g("quotes", "*"),
                    g("projects", "*"),
                    g("time", "*"),
                    g("rate_cards", "*"),
                ],
                reads(&["users", "roles", "organization", "events", "invoices"]),
            ]
            .concat(),
        ),
        "member" => role(
            "member",
            "Member",
            "Reads the organization's work; records own time; edits own profile.",
            [
                reads(&[
                    "customers",
                    "quotes",
                    "projects",
                    "users",
                    "roles",
                    "organization",
                ]),
                vec![
                    g("time", "write").when("ownerId", Operator::Eq, subject_id()),
                    g("users", "update").when("userId", Operator::Eq, subject_id()),
                    g("projects", "log_time").when("memberIds", Operator::Contains, subject_id()),
                ],
            ]
            .concat(),
        ),
        "accountant" => role(
            "accountant",
            "Accountant",
            "Runs invoices and payments; approves quotes up to 10,000.00.",
            [
                vec![g("invoices", "*"), g("payments", "*")],
                reads(&[
                    "customers",
                    "quotes",
                    "projects",
                    "time",
                    "users",
                    "roles",
                    "organization",
                    "events",
                ]),
                // In the quote's currency (major units), e.g. "9999.99".
                vec![g("quotes", "approve").when(
                    "totalAmount",
                    Operator::Lte,
                    Value::from(10_000),
                )],
            ]
            .concat(),
        ),
        "auditor" => role(
            "auditor",
            "Auditor",
            "Reads everything, including the full event history; changes nothing.",
            vec![g("*", "read")],
        ),
        _ => return None,
    })
}

/// Every built-in role.
pub fn built_in_roles() -> Vec<RoleDefinition> {
    BUILT_IN_ROLES
        .iter()
        .filter_map(|k| built_in_role(k))
        .collect()
}

/// Grants of the built-in role `role` (empty for anything else).
pub fn role_permissions(role: &str) -> Vec<String> {
    built_in_role(role)
        .map(|r| {
            r.grants
                .iter()
                .filter(|g| g.conditions.is_empty())
                .map(Grant::key)
                .collect()
        })
        .unwrap_or_default()
}

/// The `permissions` claim of a token for `roles`: the `resource:action`
/// strings of every unconditional grant, sorted and without duplicates.
pub fn token_permissions<'a>(roles: impl IntoIterator<Item = &'a RoleDefinition>) -> Vec<String> {
    let set: BTreeSet<String> = roles
        .into_iter()
        .flat_map(|r| r.grants.iter())
        .filter(|g| g.conditions.is_empty())
        .map(Grant::key)
        .collect();
    set.into_iter().collect()
}

/// What [`evaluate`] decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Allowed by `grant` of role `role`.
    Allowed { role: String, grant: Grant },
    /// No grant covers the resource and action.
    NoGrant,
    /// Grants exist but their conditions do not hold in this context.
    ConditionsNotMet,
}

impl Decision {
    pub fn allowed(&self) -> bool {
        matches!(self, Self::Allowed { .. })
    }
}

/// `checkPermission`: whether any of `roles` allows `action` on `resource`
/// for `subject` in `context`. Unconditional grants win over conditional
/// ones; conditions are evaluated with `$subject.*` placeholders replaced.
pub fn evaluate(
    roles: &[RoleDefinition],
    subject: &Subject,
    resource: &str,
    action: &str,
    context: &Map<String, Value>,
) -> Decision {
    let mut covered = false;
    let candidates = roles
        .iter()
        .flat_map(|r| r.grants.iter().map(move |g| (r, g)))
        .filter(|(_, g)| g.covers(resource, action));
    let mut ordered: Vec<_> = candidates.collect();
    ordered.sort_by_key(|(_, g)| !g.conditions.is_empty());
    for (role, grant) in ordered {
        covered = true;
        if grant
            .conditions
            .iter()
            .all(|c| condition_holds(c, subject, context))
        {
            return Decision::Allowed {
                role: role.key.clone(),
                grant: grant.clone(),
            };
        }
    }
    if covered {
        Decision::ConditionsNotMet
    } else {
        Decision::NoGrant
    }
}

fn resolve(value: &Value, subject: &Subject) -> Value {
    match value {
        Value::String(s) if s == SUBJECT_ID => Value::String(subject.user_id.to_string()),
        Value::String(s) if s == SUBJECT_ORGANIZATION => {
            Value::String(subject.organization_id.to_string())
        }
        Value::Array(items) => Value::Array(items.iter().map(|v| resolve(v, subject)).collect()),
        other => other.clone(),
    }
}

/// Looks up `a.b.c` in nested objects.
fn lookup<'a>(context: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let mut parts = path.split('.');
    let mut current = context.get(parts.next()?)?;
    for part in parts {
        current = current.as_object()?.get(part)?;
    }
    Some(current)
}

fn condition_holds(condition: &Condition, subject: &Subject, context: &Map<String, Value>) -> bool {
    let Some(actual) = lookup(context, &condition.attribute) else {
        return false;
    };
    let expected = resolve(&condition.value, subject);
    match condition.operator {
        Operator::Eq => equal(actual, &expected),
        Operator::Ne => !equal(actual, &expected),
        Operator::Lt => compare(actual, &expected).is_some_and(|o| o.is_lt()),
        Operator::Lte => compare(actual, &expected).is_some_and(|o| o.is_le()),
        Operator::Gt => compare(actual, &expected).is_some_and(|o| o.is_gt()),
        Operator::Gte => compare(actual, &expected).is_some_and(|o| o.is_ge()),
        Operator::In => expected
            .as_array()
            .is_some_and(|items| items.iter().any(|item| equal(actual, item))),
        Operator::Contains => actual
            .as_array()
            .is_some_and(|items| items.iter().any(|item| equal(item, &expected))),
    }
}

/// Equality that treats numbers by value (`1` equals `1.0`) and compares
/// strings case-sensitively.
fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

fn compare(a: &Value, b: &Value) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        // Numbers sent as strings (decimal amounts) compare numerically.
        (Value::String(x), Value::Number(y)) => x.parse::<f64>().ok()?.partial_cmp(&y.as_f64()?),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn subject() -> Subject {
        Subject {
            user_id: Uuid::from_u128(7),
            organization_id: Uuid::from_u128(9),
        }
    }

    fn ctx(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap_or_default()
    }

    fn roles(keys: &[&str]) -> Vec<RoleDefinition> {
        keys.iter().filter_map(|k| built_in_role(k)).collect()
    }

    #[test]
    fn exact_and_wildcard_token_grants() {
        assert!(Permission::CUSTOMERS_WRITE.is_granted_by(&["customers:write"]));
        assert!(Permission::CUSTOMERS_WRITE.is_granted_by(&["customers:*"]));
        assert!(Permission::CUSTOMERS_WRITE.is_granted_by(&["*:*"]));
        assert!(Permission::CUSTOMERS_READ.is_granted_by(&["*:read"]));
        assert!(!Permission::CUSTOMERS_WRITE.is_granted_by(&["*:read"]));
        assert!(!Permission::CUSTOMERS_WRITE.is_granted_by(&["customers:read"]));
        assert!(!Permission::CUSTOMERS_WRITE.is_granted_by(&["customerswrite"]));
        assert!(!Permission::CUSTOMERS_WRITE.is_granted_by::<&str>(&[]));
    }

    #[test]
    fn built_in_roles_grant_what_they_say() {
        let allowed = |role: &str, p: Permission| p.is_granted_by(&role_permissions(role));
        for role in ["owner", "admin"] {
            assert!(allowed(role, Permission::ROLES_ASSIGN));
            assert!(allowed(role, Permission::CUSTOMERS_WRITE));
        }
        assert!(allowed("manager", Permission::CUSTOMERS_WRITE));
        assert!(allowed("manager", Permission::EVENTS_READ));
        assert!(!allowed("manager", Permission::ROLES_ASSIGN));
        assert!(allowed("member", Permission::CUSTOMERS_READ));
        assert!(!allowed("member", Permission::CUSTOMERS_WRITE));
        assert!(!allowed("member", Permission::EVENTS_READ));
        // A conditional grant never appears in the token.
        assert!(!allowed("member", Permission::USERS_UPDATE));
        assert!(allowed(
            "accountant",
            Permission::new("invoices", "approve")
        ));
        assert!(!allowed("accountant", Permission::CUSTOMERS_WRITE));
        for p in [
            Permission::CUSTOMERS_READ,
            Permission::EVENTS_READ,
            Permission::USERS_READ,
        ] {
            assert!(allowed("auditor", p), "auditor reads {p}");
        }
        for p in [
            Permission::CUSTOMERS_WRITE,
            Permission::USERS_UPDATE,
            Permission::ROLES_ASSIGN,
        ] {
            assert!(!allowed("auditor", p), "auditor must not {p}");
        }
        assert!(role_permissions("nobody").is_empty());
        assert_eq!(built_in_roles().len(), 6);
    }

    #[test]
    fn ownership_condition_uses_the_subject() {
        let member = roles(&["member"]);
        let me = subject();
        let own = ctx(json!({"userId": me.user_id.to_string()}));
        let other = ctx(json!({"userId": Uuid::from_u128(8).to_string()}));
        assert!(evaluate(&member, &me, "users", "update", &own).allowed());
        assert_eq!(
            evaluate(&member, &me, "users", "update", &other),
            Decision::ConditionsNotMet
        );
        // Without the attribute the condition cannot hold.
        assert_eq!(
            evaluate(&member, &me, "users", "update", &Map::new()),
            Decision::ConditionsNotMet
        );
        assert_eq!(
            evaluate(&member, &me, "users", "delete", &own),
            Decision::NoGrant
        );
    }

    #[test]
    fn amount_limit_and_membership() {
        let accountant = roles(&["accountant"]);
        let me = subject();
        let small = ctx(json!({"totalAmount": "9999.99"}));
        let limit = ctx(json!({"totalAmount": 10_000}));
        let large = ctx(json!({"totalAmount": "10000.01"}));
        let as_text = ctx(json!({"totalAmount": "500.25"}));
        assert!(evaluate(&accountant, &me, "quotes", "approve", &small).allowed());
        assert!(evaluate(&accountant, &me, "quotes", "approve", &limit).allowed());
        assert!(evaluate(&accountant, &me, "quotes", "approve", &as_text).allowed());
        assert!(!evaluate(&accountant, &me, "quotes", "approve", &large).allowed());

        let member = roles(&["member"]);
        let in_project = ctx(json!({"memberIds": [me.user_id.to_string(), "x"]}));
        let outside = ctx(json!({"memberIds": ["x"]}));
        assert!(evaluate(&member, &me, "projects", "log_time", &in_project).allowed());
        assert!(!evaluate(&member, &me, "projects", "log_time", &outside).allowed());
    }

    #[test]
    fn unconditional_grant_wins_and_names_its_role() {
        let both = roles(&["member", "manager"]);
        let me = subject();
        let decision = evaluate(&both, &me, "time", "write", &Map::new());
        match decision {
            Decision::Allowed { role, grant } => {
                assert_eq!(role, "manager");
                assert!(grant.conditions.is_empty());
            }
            other => panic!("expected allowed, got {other:?}"),
        }
    }

    #[test]
    fn custom_role_conditions_and_operators() {
        let custom = RoleDefinition {
            key: "regional".into(),
            name: "Regional".into(),
            description: None,
            built_in: false,
            grants: vec![
                Grant::new("customers", "write")
                    .when("country", Operator::In, json!(["NZ", "AU"]))
                    .when("organizationId", Operator::Eq, json!(SUBJECT_ORGANIZATION)),
                Grant::new("quotes", "discount").when("percent", Operator::Lt, json!(15)),
                Grant::new("quotes", "send").when("status", Operator::Ne, json!("draft")),
                Grant::new("projects", "close").when("budget.remaining", Operator::Gte, json!(0)),
                Grant::new("projects", "open").when("priority", Operator::Gt, json!(2)),
            ],
        };
        let roles = [custom];
        let me = subject();
        let org = me.organization_id.to_string();
        let check = |r: &str, a: &str, c: Value| evaluate(&roles, &me, r, a, &ctx(c)).allowed();
        assert!(check(
            "customers",
            "write",
            json!({"country": "NZ", "organizationId": org})
        ));
        assert!(!check(
            "customers",
            "write",
            json!({"country": "US", "organizationId": org})
        ));
        assert!(!check(
            "customers",
            "write",
            json!({"country": "NZ", "organizationId": "other"})
        ));
        assert!(check("quotes", "discount", json!({"percent": 14.5})));
        assert!(!check("quotes", "discount", json!({"percent": 15})));
        assert!(!check("quotes", "discount", json!({"percent": "abc"})));
        assert!(check("quotes", "send", json!({"status": "approved"})));
        assert!(!check("quotes", "send", json!({"status": "draft"})));
        assert!(check(
            "projects",
            "close",
            json!({"budget": {"remaining": 0}})
        ));
        assert!(!check(
            "projects",
            "close",
            json!({"budget": {"remaining": -1}})
        ));
        assert!(check("projects", "open", json!({"priority": 3})));
        assert!(!check("projects", "open", json!({"priority": 2})));
    }

    #[test]
    fn token_permissions_hold_only_unconditional_grants() {
        let perms = token_permissions(&roles(&["member", "auditor"]));
        assert!(perms.contains(&"customers:read".to_owned()));
        assert!(perms.contains(&"*:read".to_owned()));
        assert!(
            !perms
                .iter()
                .any(|p| p == "users:update" || p == "time:write")
        );
        let mut sorted = perms.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(perms, sorted);
    }

    #[test]
    fn custom_grants_are_validated() {
        let bad = vec![
            Grant::new("Customers", "write"),
            Grant::new("quotes", "").when("x y", Operator::In, json!(1)),
            Grant::new("quotes", "approve").when("amount", Operator::Lte, json!({"a": 1})),
        ];
        let errors = Grant::validate_all("/grants", &bad).unwrap_err();
        let pointers: Vec<&str> = errors.iter().map(|e| e.pointer.as_str()).collect();
        assert_eq!(
            pointers,
            vec![
                "/grants/0/resource",
                "/grants/1/action",
                "/grants/1/conditions/0/attribute",
                "/grants/1/conditions/0/value",
                "/grants/2/conditions/0/value",
            ]
        );
        assert!(Grant::validate_all("/grants", &[Grant::new("*", "read")]).is_ok());
    }
}
