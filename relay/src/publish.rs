//! Turning logged events into Kafka records.

use std::time::Duration;

use futures::future::join_all;
use pivotal_event_store::log::{Checkpoint, LoggedEvent};
use pivotal_messaging::{headers, topics};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};

use crate::RelayError;

/// A record handed to the producer: what names it should it be refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    pub event_id: uuid::Uuid,
    /// The event's position in the global log.
    pub position: i64,
    /// The transaction that committed it (with `position`, the checkpoint
    /// once it is acknowledged).
    pub tx_id: i64,
    /// The length of the record's value (the envelope's JSON).
    pub bytes: usize,
}

impl Record {
    /// The relay's checkpoint once this record and every one before it
    /// are acknowledged.
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            tx_id: self.tx_id,
            position: self.position,
        }
    }

    fn refused(self, error: KafkaError) -> RelayError {
        RelayError::Refused(Box::new(Refusal {
            record: self,
            error,
        }))
    }
}

/// A record the producer or the broker refused, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub record: Record,
    pub error: KafkaError,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Record {
            event_id,
            position,
            bytes,
            ..
        } = self.record;
        write!(
            f,
            "event {event_id} at position {position} ({bytes} bytes) was refused: {}",
            self.error
        )
    }
}

impl Refusal {
    /// Whether the record will be refused again however often it is sent,
    /// until an operator changes a limit or a permission: it is too large
    /// for the producer or the topic, the broker finds it invalid (not
    /// merely corrupted on the way, which a resend mends), or the relay may
    /// not write to the topic. Everything after it in the log waits behind
    /// it.
    pub fn is_permanent(&self) -> bool {
        use RDKafkaErrorCode as C;
        matches!(
            self.error.rdkafka_error_code(),
            Some(
                C::MessageSizeTooLarge
                    | C::MessageBatchTooLarge
                    | C::InvalidRecord
                    | C::TopicAuthorizationFailed
                    | C::ClusterAuthorizationFailed
            )
        )
    }
}

/// Produces every event of `batch` and waits until the broker acknowledged
/// all; an error when the producer did not take them all.
pub async fn publish_batch(
    producer: &FutureProducer,
    prefix: &str,
    batch: &[LoggedEvent],
) -> Result<(), RelayError> {
    let pending = enqueue(producer, prefix, batch)?;
    let handed = pending.handed();
    pending.acknowledged().await.map_err(|u| u.error)?;
    if handed < batch.len() {
        return Err(RelayError::Delivery(format!(
            "the producer took {handed} of {} records",
            batch.len()
        )));
    }
    Ok(())
}

/// The records of a batch handed to the producer, not yet acknowledged.
#[must_use = "the batch is published only once every record is acknowledged"]
pub struct Pending {
    deliveries: Vec<DeliveryFuture>,
    /// The records of `deliveries`, in the same order.
    sent: Vec<Record>,
    /// Publish spans last until the broker acknowledged their record.
    spans: Vec<tracing::Span>,
    /// Why the producer refused a record: the records after it were not
    /// handed over.
    refused: Option<RelayError>,
    /// The batch ends before its last record: the producer's queue was
    /// full, or the producer refused the record after those handed over
    /// (which then comes first in the next batch, and fails there alone).
    /// The records from there on wait for the next batch.
    cut: bool,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("records", &self.deliveries.len())
            .field("refused", &self.refused)
            .field("cut", &self.cut)
            .finish()
    }
}

/// A batch not acknowledged in full: why, and how far it was.
#[derive(Debug)]
pub struct Unacknowledged {
    /// The first failure, in the batch's order; for a refusal, a
    /// [`RelayError::Refused`] naming the record.
    pub error: RelayError,
    /// The last record of the batch's acknowledged beginning (the records
    /// before the first that failed), if any: the checkpoint may move to
    /// it, so that a retry does not publish those again.
    pub acknowledged: Option<Record>,
    /// How many records that beginning holds.
    pub count: usize,
}

impl Pending {
    /// Waits until the broker acknowledged every record handed over (at
    /// most 60 s each): an error when any was refused (other than for a
    /// full queue), dropped or not acknowledged; for a refusal, the first
    /// record refused, as a [`RelayError::Refused`].
    /// Every record is waited for even when one fails, so that nothing of
    /// the batch is still on its way once this returns.
    pub async fn acknowledged(self) -> Result<(), Box<Unacknowledged>> {
        let records = self.deliveries.into_iter().zip(self.sent.iter().copied());
        let acknowledgements = join_all(records.map(|(d, sent)| async move {
            match tokio::time::timeout(Duration::from_secs(60), d).await {
                Ok(Ok(Ok(_))) => Ok(()),
                Ok(Ok(Err((error, _)))) => Err(sent.refused(error)),
                Ok(Err(_)) => Err(RelayError::Delivery(
                    "the producer dropped the message".into(),
                )),
                Err(_) => Err(RelayError::Delivery(
                    "no acknowledgement within 60 s".into(),
                )),
            }
        }))
        .await;
        drop(self.spans);
        settle(&self.sent, acknowledgements, self.refused)
    }

    /// Whether the producer refused part of the batch (it fails once
    /// acknowledged) or had no room for all of it: nothing may be sent
    /// after it until it is acknowledged.
    pub fn is_refused(&self) -> bool {
        self.refused.is_some() || self.cut
    }

    /// Whether the batch ends before its last record (see [`Pending::handed`]).
    pub fn is_cut(&self) -> bool {
        self.cut
    }

    /// How many of the batch's records, from its first, the producer took.
    pub fn handed(&self) -> usize {
        self.deliveries.len()
    }
}

/// How a batch's acknowledgements add up: every record of `sent`
/// acknowledged, or the first failure (the producer's refusal of the
/// record after them coming first) with the records acknowledged before
/// the first that was not.
fn settle(
    sent: &[Record],
    outcomes: Vec<Result<(), RelayError>>,
    refused: Option<RelayError>,
) -> Result<(), Box<Unacknowledged>> {
    let count = outcomes.iter().take_while(|o| o.is_ok()).count();
    let Some(error) = refused.or_else(|| outcomes.into_iter().find_map(Result::err)) else {
        return Ok(());
    };
    Err(Box::new(Unacknowledged {
        error,
        acknowledged: count.checked_sub(1).and_then(|i| sent.get(i)).copied(),
        count,
    }))
}

/// Hands every event of `batch` to the producer, in log order, without
/// waiting for the broker. With the idempotent producer, records of one key
/// (one partition) are written in the order they were handed over, also
/// across batches and when retried. When the producer's queue is full
/// (`queue.buffering.max.messages`), or the producer refuses a record after
/// the first, hands over the records before it only: [`Pending::handed`]
/// says how many. A refused first record makes the whole batch fail.
pub fn enqueue(
    producer: &FutureProducer,
    prefix: &str,
    batch: &[LoggedEvent],
) -> Result<Pending, RelayError> {
    let mut deliveries = Vec::with_capacity(batch.len());
    let mut sent = Vec::with_capacity(batch.len());
    let mut spans = Vec::new();
    for event in batch {
        let envelope = event
            .envelope()
            .map_err(|e| RelayError::Envelope(event.event_id.to_string(), e.to_string()))?;
        let value = serde_json::to_vec(&envelope)
            .map_err(|e| RelayError::Envelope(event.event_id.to_string(), e.to_string()))?;
        let topic = topics::event_topic(prefix, &event.aggregate_type);
        let event_id = event.event_id.to_string();
        let position = event.position.to_string();
        let organization = envelope.organization_id.to_string();
        let (trace, span) = trace_context(event, &topic);
        let mut record_headers = OwnedHeaders::new()
            .insert(Header {
                key: headers::EVENT_ID,
                value: Some(&event_id),
            })
            .insert(Header {
                key: headers::EVENT_TYPE,
                value: Some(&event.event_type),
            })
            .insert(Header {
                key: headers::SCHEMA_VERSION,
                value: Some(&event.event_version),
            })
            .insert(Header {
                key: headers::CORRELATION_ID,
                value: Some(&envelope.metadata.correlation_id),
            })
            .insert(Header {
                key: headers::ORGANIZATION_ID,
                value: Some(&organization),
            })
            .insert(Header {
                key: headers::POSITION,
                value: Some(&position),
            })
            .insert(Header {
                key: headers::CONTENT_TYPE,
                value: Some("application/json"),
            });
        for (key, value) in &trace {
            record_headers = record_headers.insert(Header {
                key,
                value: Some(value),
            });
        }
        let record = FutureRecord::to(&topic)
            .key(&event.aggregate_id)
            .payload(&value)
            .headers(record_headers);
        let handed = Record {
            event_id: event.event_id,
            position: event.position,
            tx_id: event.tx_id,
            bytes: value.len(),
        };
        match producer.send_result(record) {
            Ok(delivery) => {
                deliveries.push(delivery);
                sent.push(handed);
                spans.extend(span);
            }
            Err((error, _)) => {
                // A full queue, or a refusal after the batch's first record:
                // the batch ends here, and the records before it are
                // published on their own (so the checkpoint reaches a refused
                // record). A refused first record fails the batch.
                let full = error == KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull);
                let refused = (!full && deliveries.is_empty()).then(|| handed.refused(error));
                return Ok(Pending {
                    deliveries,
                    sent,
                    spans,
                    cut: refused.is_none(),
                    refused,
                });
            }
        }
    }
    Ok(Pending {
        deliveries,
        sent,
        spans,
        refused: None,
        cut: false,
    })
}

/// The trace context the record carries: that of a publish span continuing
/// the command's trace (returned, to be kept open until the broker
/// acknowledges), or, with tracing off here, the stored context as it is.
fn trace_context(
    event: &LoggedEvent,
    topic: &str,
) -> (Vec<(&'static str, String)>, Option<tracing::Span>) {
    use pivotal_telemetry::trace::{self, TRACEPARENT, TRACESTATE};
    let stored = |key: &str| event.metadata.get(key).map(String::as_str);
    let Some(parent) = stored(TRACEPARENT) else {
        return (Vec::new(), None);
    };
    let span = tracing::info_span!(
        "publish",
        otel.name = %format!("publish {topic}"),
        otel.kind = "producer",
        messaging.system = "kafka",
        messaging.destination.name = topic,
        messaging.kafka.message.key = %event.aggregate_id,
        event.id = %event.event_id,
        event.position = event.position,
    );
    trace::set_parent(&span, stored);
    let own = span.in_scope(trace::current_context);
    if !own.is_empty() {
        return (own, Some(span));
    }
    let mut fields = vec![(TRACEPARENT, parent.to_owned())];
    if let Some(state) = stored(TRACESTATE) {
        fields.push((TRACESTATE, state.to_owned()));
    }
    (fields, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(n: i64) -> Vec<Record> {
        (1..=n)
            .map(|position| Record {
                event_id: uuid::Uuid::now_v7(),
                position,
                tx_id: 100 + position,
                bytes: 10,
            })
            .collect()
    }

    fn failed() -> RelayError {
        RelayError::Delivery("no acknowledgement within 60 s".into())
    }

    #[test]
    fn a_batch_acknowledged_in_full_settles() {
        let sent = records(3);
        assert!(settle(&sent, vec![Ok(()), Ok(()), Ok(())], None).is_ok());
        assert!(settle(&[], Vec::new(), None).is_ok());
    }

    #[test]
    fn a_failure_keeps_the_acknowledged_records_before_it_and_no_later_one() {
        let sent = records(5);
        let outcomes = vec![Ok(()), Ok(()), Err(failed()), Ok(()), Err(failed())];
        let unacknowledged = settle(&sent, outcomes, None).unwrap_err();
        assert_eq!(unacknowledged.count, 2);
        assert_eq!(unacknowledged.acknowledged, Some(sent[1]));
        assert_eq!(
            unacknowledged.acknowledged.map(|r| r.checkpoint()),
            Some(Checkpoint {
                tx_id: 102,
                position: 2
            })
        );
        assert!(matches!(unacknowledged.error, RelayError::Delivery(_)));
    }

    #[test]
    fn a_first_record_that_failed_leaves_nothing_acknowledged() {
        let sent = records(2);
        let unacknowledged = settle(&sent, vec![Err(failed()), Ok(())], None).unwrap_err();
        assert_eq!(unacknowledged.count, 0);
        assert_eq!(unacknowledged.acknowledged, None);
    }

    #[test]
    fn the_first_failure_is_the_one_reported() {
        let sent = records(3);
        let refusal = sent[1].refused(KafkaError::MessageProduction(
            RDKafkaErrorCode::MessageSizeTooLarge,
        ));
        let outcomes = vec![Ok(()), Err(refusal), Err(failed())];
        let unacknowledged = settle(&sent, outcomes, None).unwrap_err();
        let RelayError::Refused(refusal) = unacknowledged.error else {
            panic!("not the refusal: {:?}", unacknowledged.error);
        };
        assert_eq!(refusal.record, sent[1]);
        assert_eq!(unacknowledged.acknowledged, Some(sent[0]));
    }

    #[test]
    fn a_refused_first_record_fails_the_batch_with_nothing_acknowledged() {
        let sent = records(1);
        let refusal = sent[0].refused(KafkaError::MessageProduction(
            RDKafkaErrorCode::MessageSizeTooLarge,
        ));
        let unacknowledged = settle(&[], Vec::new(), Some(refusal)).unwrap_err();
        assert!(matches!(unacknowledged.error, RelayError::Refused(_)));
        assert_eq!(unacknowledged.count, 0);
        assert_eq!(unacknowledged.acknowledged, None);
    }
}
