//! Permissions are `resource:action` strings carried in the access token
//! (`permissions` claim), as in the architecture document's permission model.
//! A role grants a set of permissions; the token lists both.

/// A permission the APIs check before running a command or query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permission {
    pub resource: &'static str,
    pub action: &'static str,
}

impl Permission {
    pub const CUSTOMERS_READ: Self = Self::new("customers", "read");
    pub const CUSTOMERS_WRITE: Self = Self::new("customers", "write");
    pub const EVENTS_READ: Self = Self::new("events", "read");

    pub const fn new(resource: &'static str, action: &'static str) -> Self {
        Self { resource, action }
    }

    /// True when `granted` (a token's permission list) allows this permission:
    /// an exact `resource:action`, `resource:*`, or `*:*`.
    pub fn is_granted_by<S: AsRef<str>>(&self, granted: &[S]) -> bool {
        granted.iter().any(|p| {
            let Some((resource, action)) = p.as_ref().split_once(':') else {
                return false;
            };
            (resource == self.resource || resource == "*")
                && (action == self.action || action == "*")
        })
    }
}

impl std::fmt::Display for Permission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.resource, self.action)
    }
}

/// Permissions of the built-in roles.
pub fn role_permissions(role: &str) -> &'static [&'static str] {
    match role {
        "owner" | "admin" => &["*:*"],
        "manager" => &["customers:read", "customers:write", "events:read"],
        "member" => &["customers:read"],
        _ => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_and_wildcard_grants() {
        assert!(Permission::CUSTOMERS_WRITE.is_granted_by(&["customers:write"]));
        assert!(Permission::CUSTOMERS_WRITE.is_granted_by(&["customers:*"]));
        assert!(Permission::CUSTOMERS_WRITE.is_granted_by(&["*:*"]));
        assert!(!Permission::CUSTOMERS_WRITE.is_granted_by(&["customers:read"]));
        assert!(!Permission::CUSTOMERS_WRITE.is_granted_by(&["customerswrite"]));
        assert!(!Permission::CUSTOMERS_WRITE.is_granted_by::<&str>(&[]));
    }

    #[test]
    fn roles_expand_to_permissions() {
        assert!(Permission::CUSTOMERS_WRITE.is_granted_by(role_permissions("manager")));
        assert!(!Permission::CUSTOMERS_WRITE.is_granted_by(role_permissions("member")));
        assert!(role_permissions("nobody").is_empty());
    }
}
