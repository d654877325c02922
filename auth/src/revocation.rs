//! Access tokens revoked before they expire. Deactivating or locking a user,
//! changing a password and detecting refresh-token theft end every session
//! of the user at once: the time is recorded in Redis (shared by every API
//! process) for as long as a token issued before it could live, and tokens
//! whose `jti` (a UUIDv7, so a millisecond timestamp) is older are refused.

use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use uuid::Uuid;

use crate::Claims;

#[derive(Clone)]
pub struct Revocations {
    redis: ConnectionManager,
    prefix: String,
    /// Longest a token lives (access-token lifetime plus clock leeway).
    horizon_secs: u64,
}

impl std::fmt::Debug for Revocations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Revocations")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// How long a revocation must be remembered: as long as a token issued just
/// before it could still be accepted (lifetime, leeway, a minute's margin).
pub fn horizon_secs(auth: &pivotal_settings::AuthSettings) -> u64 {
    u64::try_from(auth.access_token_ttl_secs).unwrap_or(3600) + auth.leeway_secs + 60
}

/// Milliseconds since the epoch encoded in a UUIDv7.
fn issued_ms(jti: Uuid) -> Option<u64> {
    let (secs, nanos) = jti.get_timestamp()?.to_unix();
    Some(secs * 1000 + u64::from(nanos) / 1_000_000)
}

impl Revocations {
    pub fn new(redis: ConnectionManager, prefix: &str, horizon_secs: u64) -> Self {
        Self {
            redis,
            prefix: prefix.to_owned(),
            horizon_secs: horizon_secs.max(1),
        }
    }

    /// Connects to `url`. Commands time out after half a second, so a
    /// Redis outage costs a caller that long, not a hang.
    pub async fn connect(url: &str, prefix: &str, horizon_secs: u64) -> redis::RedisResult<Self> {
        let timeout = Some(std::time::Duration::from_millis(500));
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(timeout)
            .set_response_timeout(timeout);
        let redis = redis::Client::open(url)?
            .get_connection_manager_with_config(config)
            .await?;
        Ok(Self::new(redis, prefix, horizon_secs))
    }

    /// Whether Redis answers (readiness checks).
    pub async fn ping(&self) -> redis::RedisResult<()> {
        let mut conn = self.redis.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(|_| ())
    }

    fn key(&self, user_id: Uuid) -> String {
        format!("{}:tokens-revoked-before:{user_id}", self.prefix)
    }

    /// Refuses every access token of `user_id` issued until now.
    pub async fn revoke_user(&self, user_id: Uuid) -> redis::RedisResult<()> {
        let now_ms = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or_default();
        let mut conn = self.redis.clone();
        let _: () = conn
            .set_ex(self.key(user_id), now_ms, self.horizon_secs)
            .await?;
        Ok(())
    }

    /// Whether `claims` belong to a token issued before its user's sessions
    /// were ended. A `jti` that is not a UUIDv7 counts as revoked then.
    pub async fn is_revoked(&self, claims: &Claims) -> redis::RedisResult<bool> {
        let mut conn = self.redis.clone();
        let before: Option<u64> = conn.get(self.key(claims.sub)).await?;
        Ok(match before {
            None => false,
            Some(before) => issued_ms(claims.jti).is_none_or(|issued| issued < before),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_time_comes_from_the_uuid_v7() {
        let before = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap();
        let issued = issued_ms(Uuid::now_v7()).unwrap();
        let after = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap();
        assert!(before <= issued && issued <= after);
        assert_eq!(issued_ms(Uuid::new_v4()), None);
    }
}
