//! Live GraphQL: subscriptions over WebSocket (`graphql-transport-ws`, at
//! `/graphql/ws`), authenticated at `connection_init` with the same bearer
//! token as queries.
//!
//! Projectors publish one notification per applied event on the Redis
//! channel `{prefix}:changes:{organization}` after their transaction
//! commits; every query-API replica subscribes to the pattern and fans the
//! notifications out to its own clients, so a client sees a change whichever
//! replica it is connected to, and only after the read model has it.
//!
//! The same feed keeps the replica's read cache coherent
//! ([`crate::cache`]): each notification first drops the cache's older
//! entry, then reaches subscribers, so a subscriber that queries at once
//! never meets the older entry on its own replica. The feed tells the cache
//! when it is up (subscribed, and answering a PING every second) and when it
//! may have missed a notification (the connection failed, a PING went
//! unanswered, a notification could not be read).

use std::time::Duration;

use async_graphql::{Context, ID, SimpleObject, Subscription};
use futures::{Stream, StreamExt};
use pivotal_auth::Principal;
use pivotal_domain::permissions::Permission;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::cache::ReadCache;
use crate::errors;
use crate::scalars::Instant;
use crate::schema::caller;

/// How often the feed's subscription is checked with a PING.
const PING_EVERY: Duration = Duration::from_secs(1);
/// Longest wait for the feed's connection or a PING's answer.
const PING_TIMEOUT: Duration = Duration::from_secs(1);

/// One applied event, as published by the projector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, SimpleObject)]
#[serde(rename_all = "camelCase")]
pub struct Change {
    /// Event type, e.g. `customer.renamed`.
    #[graphql(name = "type")]
    #[serde(rename = "type")]
    pub event_type: String,
    pub aggregate_type: String,
    pub aggregate_id: String,
    /// Aggregate version after the event.
    pub version: i64,
    pub timestamp: Instant,
    #[graphql(skip)]
    pub organization_id: Uuid,
}

/// The in-process fan-out of changes to this replica's subscribers.
#[derive(Debug, Clone)]
pub struct Changes(broadcast::Sender<Change>);

impl Default for Changes {
    fn default() -> Self {
        Self(broadcast::channel(1024).0)
    }
}

impl Changes {
    pub fn publish(&self, change: Change) {
        // No subscriber is not an error.
        let _ = self.0.send(change);
    }

    fn subscribe(&self) -> impl Stream<Item = Change> + Send + 'static + use<> {
        futures::stream::unfold(self.0.subscribe(), |mut receiver| async move {
            loop {
                match receiver.recv().await {
                    Ok(change) => return Some((change, receiver)),
                    // A slow client misses notifications rather than
                    // holding the others back.
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "a subscriber fell behind");
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
    }

    /// Follows `{prefix}:changes:*` on Redis until the process ends,
    /// reconnecting after failures, and keeps `cache` told.
    pub fn follow_redis(
        &self,
        url: String,
        prefix: String,
        cache: ReadCache,
    ) -> tokio::task::JoinHandle<()> {
        let changes = self.clone();
        tokio::spawn(async move {
            loop {
                let outcome = changes.follow_once(&url, &prefix, &cache).await;
                cache.feed_down();
                if let Err(error) = outcome {
                    tracing::warn!(%error, "change feed from Redis interrupted; reconnecting");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    }

    async fn follow_once(
        &self,
        url: &str,
        prefix: &str,
        cache: &ReadCache,
    ) -> redis::RedisResult<()> {
        let client = redis::Client::open(url)?;
        let pubsub = tokio::time::timeout(PING_TIMEOUT, client.get_async_pubsub())
            .await
            .map_err(|_| link_error("connecting timed out"))??;
        let (mut sink, mut stream) = pubsub.split();
        // Answered once Redis has subscribed: every notification published
        // from now on reaches the stream.
        tokio::time::timeout(PING_TIMEOUT, sink.psubscribe(format!("{prefix}:changes:*")))
            .await
            .map_err(|_| link_error("subscribing timed out"))??;
        cache.feed_up();
        let mut ticks = tokio::time::interval(PING_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                message = stream.next() => {
                    let Some(message) = message else {
                        return Err(link_error("subscription closed"));
                    };
                    let change = message
                        .get_payload::<String>()
                        .map_err(|error| error.to_string())
                        .and_then(|payload| {
                            serde_json::from_str::<Change>(&payload).map_err(|error| error.to_string())
                        });
                    match change {
                        Ok(change) => {
                            if let Ok(id) = Uuid::parse_str(&change.aggregate_id) {
                                cache.announced(
                                    &change.aggregate_type,
                                    change.organization_id,
                                    id,
                                    change.version,
                                );
                            }
                            self.publish(change);
                        }
                        Err(error) => {
                            // What it announced is unknown: nothing cached
                            // before it is vouched for any more.
                            tracing::warn!(%error, "unreadable change notification");
                            cache.feed_down();
                            cache.feed_up();
                        }
                    }
                }
                _ = ticks.tick() => {
                    tokio::time::timeout(PING_TIMEOUT, sink.ping::<redis::Value>())
                        .await
                        .map_err(|_| link_error("PING timed out"))??;
                }
            }
        }
    }
}

fn link_error(what: &'static str) -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Io, "change feed", what.to_owned()))
}

/// What reading an aggregate type needs.
fn read_permission(aggregate_type: &str) -> Option<Permission> {
    Some(match aggregate_type {
        "customer" => Permission::CUSTOMERS_READ,
        "user" => Permission::USERS_READ,
        "organization" => Permission::ORGANIZATION_READ,
        "quote" => Permission::new("quotes", "read"),
        "rate_card" => Permission::new("rate_cards", "read"),
        _ => return None,
    })
}

fn feed<F>(
    changes: &Changes,
    principal: Principal,
    keep: F,
) -> impl Stream<Item = Change> + Send + 'static + use<F>
where
    F: Fn(&Change) -> bool + Send + Sync + 'static,
{
    let organization = principal.claims.org;
    let permissions = principal.claims.permissions;
    changes.subscribe().filter(move |change| {
        let visible = change.organization_id == organization
            && read_permission(&change.aggregate_type)
                .is_some_and(|p| p.is_granted_by(&permissions))
            && keep(change);
        futures::future::ready(visible)
    })
}

fn parse_id(id: &ID) -> async_graphql::Result<String> {
    Uuid::parse_str(id)
        .map(|u| u.to_string())
        .map_err(|_| errors::bad_input("id is not an id"))
}

#[derive(Debug, Default)]
pub struct SubscriptionRoot;

#[Subscription]
impl SubscriptionRoot {
    /// Every change to one customer (needs `customers:read`).
    async fn customer_changed(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<impl Stream<Item = Change>> {
        let principal = caller(ctx, Permission::CUSTOMERS_READ)?.clone();
        let id = parse_id(&id)?;
        Ok(feed(ctx.data::<Changes>()?, principal, move |c| {
            c.aggregate_type == "customer" && c.aggregate_id == id
        }))
    }

    /// Every change to one quote (needs `quotes:read`).
    async fn quote_changed(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<impl Stream<Item = Change>> {
        let principal = caller(ctx, Permission::new("quotes", "read"))?.clone();
        let id = parse_id(&id)?;
        Ok(feed(ctx.data::<Changes>()?, principal, move |c| {
            c.aggregate_type == "quote" && c.aggregate_id == id
        }))
    }

    /// Every change in the caller's organization that the caller may read.
    async fn changes(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<impl Stream<Item = Change>> {
        let principal = ctx
            .data_opt::<Principal>()
            .ok_or_else(|| errors::coded(errors::UNAUTHENTICATED, "a bearer token is required"))?
            .clone();
        Ok(feed(ctx.data::<Changes>()?, principal, |_| true))
    }
}
