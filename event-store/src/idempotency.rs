//! Stored responses for requests that carried an `Idempotency-Key` header.
//!
//! A key is claimed before the command runs (insert of a row without a
//! response) and completed with the response afterwards. A retry with the same
//! key and body gets the stored response; the same key with another body is
//! refused; a retry while the first request is still running is told so.
//! A key left without a response for [`ABANDONED_AFTER_SECS`] belonged to a
//! request whose process died: the next retry takes it over and answers from
//! the events stored under the key (or runs the command if there are none).
//! Keys are scoped to the organization of the caller.

use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::commands::{CommittedEvent, Outcome};

/// What claiming a key found.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// The key was free and is now held by this request.
    Acquired,
    /// The key was used before with the same request; here is its response.
    Replay {
        status: u16,
        body: Value,
        headers: Value,
    },
    /// The key was used before with a different request body.
    Mismatch,
    /// The first request with this key has not finished yet.
    InProgress,
    /// The first request with this key never finished (its process died):
    /// the key now belongs to this request, which must first look for what
    /// the first one appended ([`appended_with_key`]).
    Abandoned,
}

/// A key held this long without a response belongs to a request that died.
pub const ABANDONED_AFTER_SECS: f64 = 30.0;

/// Request hash, status, body and headers of a used key.
type StoredKey = (String, Option<i16>, Option<Value>, Option<Value>);

pub async fn claim(
    pool: &PgPool,
    organization_id: Uuid,
    key: &str,
    request_hash: &str,
) -> Result<Claim, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (organization_id, idempotency_key, request_hash)
         VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
    )
    .bind(organization_id)
    .bind(key)
    .bind(request_hash)
    .execute(pool)
    .await?
    .rows_affected();
    if inserted == 1 {
        return Ok(Claim::Acquired);
    }
    let row: Option<StoredKey> = sqlx::query_as(
        "SELECT request_hash, status_code, response_body, response_headers FROM idempotency_keys
         WHERE organization_id = $1 AND idempotency_key = $2",
    )
    .bind(organization_id)
    .bind(key)
    .fetch_optional(pool)
    .await?;
    Ok(match row {
        // Released between our insert and select: let the caller try again.
        None => Claim::InProgress,
        Some((hash, _, _, _)) if hash != request_hash => Claim::Mismatch,
        Some((_, Some(status), Some(body), headers)) => Claim::Replay {
            status: u16::try_from(status).unwrap_or(500),
            body,
            headers: headers.unwrap_or(Value::Null),
        },
        Some(_) => {
            let taken = sqlx::query(
                "UPDATE idempotency_keys SET created_at = now()
                 WHERE organization_id = $1 AND idempotency_key = $2 AND status_code IS NULL
                   AND created_at < now() - make_interval(secs => $3)",
            )
            .bind(organization_id)
            .bind(key)
            .bind(ABANDONED_AFTER_SECS)
            .execute(pool)
            .await?
            .rows_affected();
            if taken == 1 {
                Claim::Abandoned
            } else {
                Claim::InProgress
            }
        }
    })
}

/// The aggregate and outcome of the command that appended events under
/// `key` in `organization_id`, if any did.
pub async fn appended_with_key(
    pool: &PgPool,
    organization_id: Uuid,
    key: &str,
) -> Result<Option<(String, Outcome)>, sqlx::Error> {
    let rows: Vec<(String, Uuid, String, i64, i64)> = sqlx::query_as(
        "SELECT aggregate_id, event_id, event_type, sequence, global_position FROM events
         WHERE metadata ->> 'idempotencyKey' = $2 AND metadata ->> 'organizationId' = $1::text
         ORDER BY sequence",
    )
    .bind(organization_id)
    .bind(key)
    .fetch_all(pool)
    .await?;
    let Some(aggregate_id) = rows.first().map(|r| r.0.clone()) else {
        return Ok(None);
    };
    let events: Vec<CommittedEvent> = rows
        .into_iter()
        .map(
            |(_, event_id, event_type, sequence, position)| CommittedEvent {
                event_id,
                event_type,
                sequence: u64::try_from(sequence).unwrap_or_default(),
                position,
            },
        )
        .collect();
    let version = events.iter().map(|e| e.sequence).max().unwrap_or_default();
    Ok(Some((aggregate_id, Outcome { version, events })))
}

/// Records the response of the request holding `key`.
pub async fn complete(
    pool: &PgPool,
    organization_id: Uuid,
    key: &str,
    status: u16,
    body: &Value,
    headers: &Value,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE idempotency_keys
         SET status_code = $3, response_body = $4, response_headers = $5, completed_at = now()
         WHERE organization_id = $1 AND idempotency_key = $2",
    )
    .bind(organization_id)
    .bind(key)
    .bind(i16::try_from(status).unwrap_or(500))
    .bind(body)
    .bind(headers)
    .execute(pool)
    .await?;
    Ok(())
}

/// Frees `key` after a request failed without changing anything, so that a
/// retry runs the command again.
pub async fn release(pool: &PgPool, organization_id: Uuid, key: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "DELETE FROM idempotency_keys
         WHERE organization_id = $1 AND idempotency_key = $2 AND status_code IS NULL",
    )
    .bind(organization_id)
    .bind(key)
    .execute(pool)
    .await?;
    Ok(())
}
