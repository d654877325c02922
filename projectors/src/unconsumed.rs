//! Partitions of the projector's topics that no member of its group
//! consumes (ADR 0034, third update).
//!
//! On Apache Kafka a member that dies loses its partitions to the others
//! once its session expires. The development broker (tansu 0.6.0) expires
//! the member but keeps the group formed with the old assignment, so the
//! dead member's partitions stay with it and nothing consumes them, while
//! every live member is settled (even with nothing) and ready. A member
//! settled in its group that sees such a partition (messages beyond the
//! group's committed offset, and that offset unmoved for longer than the
//! limit) while its own partitions move and PostgreSQL answers rejoins its
//! group, which makes the broker form it again with the live members only.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, ConsumerContext, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};
use sqlx::PgPool;

use crate::membership::Membership;

/// How long a look at the broker may take.
const LOOK_TIMEOUT: Duration = Duration::from_secs(5);

/// One partition as the group sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Look {
    pub topic: String,
    pub partition: i32,
    /// The group's committed offset; `None` when it has committed none.
    pub committed: Option<i64>,
    /// The partition's low and high watermarks.
    pub low: i64,
    pub high: i64,
}

/// The partitions with messages waiting, and since when each has waited
/// at its committed offset.
#[derive(Debug, Default)]
pub struct Unconsumed {
    waiting: HashMap<Partition, (i64, Instant)>,
}

impl Unconsumed {
    /// Records `looks` taken at `now`; returns the partitions that have
    /// had messages beyond the same committed offset for at least `limit`.
    pub fn look(&mut self, now: Instant, limit: Duration, looks: &[Look]) -> Vec<Partition> {
        let mut waiting = HashMap::with_capacity(looks.len());
        let mut stuck = Vec::new();
        for look in looks {
            let position = look.committed.unwrap_or(look.low).max(look.low);
            if position >= look.high {
                continue;
            }
            let key = (look.topic.clone(), look.partition);
            let since = match self.waiting.get(&key) {
                Some(&(offset, since)) if offset == position => since,
                _ => now,
            };
            if now.duration_since(since) >= limit {
                stuck.push(key.clone());
            }
            waiting.insert(key, (position, since));
        }
        self.waiting = waiting;
        stuck
    }

    /// Forgets every partition: after a rejoin, each waits a whole limit
    /// again before it counts.
    pub fn forget(&mut self) {
        self.waiting.clear();
    }
}

/// A partition: its topic and number.
type Partition = (String, i32);

/// Every partition of `topics` as the group sees it, and the ones this
/// member holds (blocking: the broker is asked, in four requests however
/// many partitions: the topics' metadata, the group's offsets, and each
/// partition's earliest and latest offsets).
fn look_at<C: ConsumerContext>(
    consumer: &StreamConsumer<C>,
    topics: &[String],
) -> Result<(Vec<Look>, HashSet<Partition>), rdkafka::error::KafkaError> {
    let metadata = consumer.fetch_metadata(None, LOOK_TIMEOUT)?;
    let partitions: Vec<(&str, i32)> = metadata
        .topics()
        .iter()
        .filter(|t| topics.iter().any(|name| name == t.name()))
        .flat_map(|t| t.partitions().iter().map(move |p| (t.name(), p.id())))
        .collect();
    // The earliest (low) or latest (high) offset of every partition.
    let watermarks = |at: Offset| -> Result<HashMap<Partition, i64>, rdkafka::error::KafkaError> {
        let mut query = TopicPartitionList::new();
        for (topic, partition) in &partitions {
            query.add_partition_offset(topic, *partition, at)?;
        }
        Ok(consumer
            .offsets_for_times(query, LOOK_TIMEOUT)?
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(offset) => Some(((e.topic().to_owned(), e.partition()), offset)),
                _ => None,
            })
            .collect())
    };
    let (lows, highs) = (watermarks(Offset::Beginning)?, watermarks(Offset::End)?);
    let mut wanted = TopicPartitionList::new();
    for (topic, partition) in &partitions {
        wanted.add_partition(topic, *partition);
    }
    let committed = consumer.committed_offsets(wanted, LOOK_TIMEOUT)?;
    let looks = committed
        .elements()
        .iter()
        .filter_map(|element| {
            let key = (element.topic().to_owned(), element.partition());
            Some(Look {
                committed: match element.offset() {
                    Offset::Offset(offset) => Some(offset),
                    _ => None,
                },
                low: *lows.get(&key)?,
                high: *highs.get(&key)?,
                topic: key.0,
                partition: key.1,
            })
        })
        .collect();
    let own = consumer
        .assignment()?
        .elements()
        .iter()
        .map(|e| (e.topic().to_owned(), e.partition()))
        .collect();
    Ok((looks, own))
}

/// Looks at the group's partitions every quarter of `limit` (at least
/// every half second) and rejoins the group when a partition no member
/// consumes has waited `limit`, this member's own partitions are not
/// waiting as long, PostgreSQL answers (so the wait is not everyone's),
/// and this member is settled in its group (one out of it is joining
/// already; a rejoin would only restart its join).
pub async fn watch<C: ConsumerContext + 'static>(
    consumer: Arc<StreamConsumer<C>>,
    topics: Vec<String>,
    pool: PgPool,
    membership: Membership,
    limit: Duration,
) {
    // At 0 from the start, so that alerts on it see a value.
    metrics::counter!("consumer_group_rejoins_total").increment(0);
    let mut unconsumed = Unconsumed::default();
    let mut tick = tokio::time::interval((limit / 4).max(Duration::from_millis(500)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let looked = tokio::task::spawn_blocking({
            let (consumer, topics) = (consumer.clone(), topics.clone());
            move || look_at(&consumer, &topics)
        })
        .await;
        let Ok(Ok((looks, own))) = looked else {
            // The broker is away: nothing is known, nothing is counted.
            continue;
        };
        let stuck = unconsumed.look(Instant::now(), limit, &looks);
        let (mine, orphans): (Vec<_>, Vec<_>) = stuck.into_iter().partition(|p| own.contains(p));
        if orphans.is_empty() || !mine.is_empty() || !membership.settled() {
            continue;
        }
        if sqlx::query("SELECT 1").execute(&pool).await.is_err() {
            continue;
        }
        let orphans: Vec<String> = orphans
            .iter()
            .map(|(topic, partition)| format!("{topic}[{partition}]"))
            .collect();
        tracing::warn!(
            partitions = ?orphans,
            held = own.len(),
            limit_seconds = limit.as_secs(),
            "partitions of the group's topics have waited unconsumed past the limit; rejoining the group"
        );
        metrics::counter!("consumer_group_rejoins_total").increment(1);
        consumer.unsubscribe();
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        // A local call that refuses only bad arguments; retried rather
        // than left unsubscribed, consuming nothing.
        while let Err(error) = consumer.subscribe(&names) {
            tracing::error!(%error, "cannot subscribe again after leaving the group; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        unconsumed.forget();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn look(committed: Option<i64>, high: i64) -> Look {
        Look {
            topic: "t".into(),
            partition: 0,
            committed,
            low: 0,
            high,
        }
    }

    #[test]
    fn a_partition_counts_once_its_messages_wait_at_one_offset_past_the_limit() {
        let limit = Duration::from_secs(3);
        let start = Instant::now();
        let at = |seconds| start + Duration::from_secs(seconds);
        let mut unconsumed = Unconsumed::default();
        // Nothing committed and nothing waiting: never stuck.
        assert!(unconsumed.look(at(0), limit, &[look(None, 0)]).is_empty());
        // Messages wait from 1 s on.
        assert!(unconsumed.look(at(1), limit, &[look(None, 5)]).is_empty());
        assert!(unconsumed.look(at(3), limit, &[look(None, 5)]).is_empty());
        assert_eq!(
            unconsumed.look(at(4), limit, &[look(None, 5)]),
            [("t".to_owned(), 0)]
        );
        // The offset moves: the wait starts again.
        assert!(
            unconsumed
                .look(at(5), limit, &[look(Some(2), 6)])
                .is_empty()
        );
        assert!(
            unconsumed
                .look(at(7), limit, &[look(Some(2), 6)])
                .is_empty()
        );
        assert_eq!(unconsumed.look(at(8), limit, &[look(Some(2), 6)]).len(), 1);
        // Caught up: nothing waits.
        assert!(
            unconsumed
                .look(at(20), limit, &[look(Some(6), 6)])
                .is_empty()
        );
        // Forgotten after a rejoin: a whole limit again.
        unconsumed.look(at(21), limit, &[look(Some(6), 9)]);
        unconsumed.forget();
        assert!(
            unconsumed
                .look(at(30), limit, &[look(Some(6), 9)])
                .is_empty()
        );
        assert_eq!(unconsumed.look(at(33), limit, &[look(Some(6), 9)]).len(), 1);
    }
}
