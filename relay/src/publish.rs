//! Turning logged events into Kafka records.

use std::time::Duration;

use futures::future::join_all;
use pivotal_event_store::log::LoggedEvent;
use pivotal_messaging::{headers, topics};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::RelayError;

/// Produces every event of `batch` and waits until the broker acknowledged all.
///
/// Records are enqueued in log order; with the idempotent producer, records
/// of one key (one partition) are written in that order even when retried.
pub async fn publish_batch(
    producer: &FutureProducer,
    prefix: &str,
    batch: &[LoggedEvent],
) -> Result<(), RelayError> {
    let mut deliveries = Vec::with_capacity(batch.len());
    // Publish spans last until the broker acknowledged their record.
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
        spans.extend(span);
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
        match producer.send_result(record) {
            Ok(delivery) => deliveries.push(delivery),
            Err((error, _)) => {
                // Local queue full or similar: wait for what is in flight, then fail the batch.
                join_all(deliveries).await;
                return Err(RelayError::Kafka(error));
            }
        }
    }
    let acknowledgements = join_all(deliveries.into_iter().map(|d| async move {
        match tokio::time::timeout(Duration::from_secs(60), d).await {
            Ok(Ok(Ok(_))) => Ok(()),
            Ok(Ok(Err((error, _)))) => Err(RelayError::Kafka(error)),
            Ok(Err(_)) => Err(RelayError::Delivery(
                "the producer dropped the message".into(),
            )),
            Err(_) => Err(RelayError::Delivery(
                "no acknowledgement within 60 s".into(),
            )),
        }
    }))
    .await;
    drop(spans);
    // Every record must be acknowledged before the checkpoint may move.
    acknowledgements.into_iter().collect()
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
