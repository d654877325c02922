//! Authorization beyond the token's own permission list: conditional grants
//! evaluated against the request's context, and the organization's policy
//! that sensitive operations need a token obtained with MFA.

use pivotal_domain::permissions::{Decision, Permission, Subject, evaluate};
use serde_json::{Map, Value};

use crate::AppState;
use crate::error::ApiError;
use crate::extract::Caller;

/// Allows `permission` when the token grants it outright, or when one of the
/// caller's roles grants it under conditions that hold in `context`.
pub async fn authorize(
    state: &AppState,
    caller: &Caller,
    permission: Permission,
    context: Map<String, Value>,
) -> Result<(), ApiError> {
    if caller.0.has(permission) {
        return Ok(());
    }
    let claims = &caller.0.claims;
    let roles = state
        .identity
        .role_definitions(claims.org, claims.roles.iter())
        .await?;
    let subject = Subject {
        user_id: claims.sub,
        organization_id: claims.org,
    };
    match evaluate(
        &roles,
        &subject,
        permission.resource,
        permission.action,
        &context,
    ) {
        Decision::Allowed { .. } => Ok(()),
        Decision::NoGrant | Decision::ConditionsNotMet => {
            Err(ApiError::Forbidden(permission.to_string()))
        }
    }
}

/// Refuses a token without `mfa: true` when the organization requires MFA
/// for sensitive operations (email, password, MFA, role changes).
pub async fn sensitive(state: &AppState, caller: &Caller) -> Result<(), ApiError> {
    if caller.0.claims.mfa {
        return Ok(());
    }
    let (org, _) = state
        .identity
        .organizations()
        .load(&caller.0.claims.org.to_string())
        .await?;
    let required = org
        .visible_to(&caller.0.actor())
        .is_some_and(|o| o.policy.require_mfa_for_sensitive_operations);
    if required {
        Err(ApiError::MfaRequired)
    } else {
        Ok(())
    }
}

/// `{"userId": id}`: the context of operations on one user.
pub fn user_context(user_id: uuid::Uuid) -> Map<String, Value> {
    let mut map = Map::new();
    map.insert("userId".into(), Value::String(user_id.to_string()));
    map
}
