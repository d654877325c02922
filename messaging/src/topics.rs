//! Topic names and topic creation.

use std::time::Duration;

use pivotal_settings::KafkaSettings;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

/// `retention.ms` of the event topics: effectively unlimited.
pub const RETAIN_FOREVER_MS: &str = "9223372036854775807";

/// `{prefix}.{aggregate_type}.events`, e.g. `pivotal.customer.events`.
pub fn event_topic(prefix: &str, aggregate_type: &str) -> String {
    format!("{prefix}.{aggregate_type}.events")
}

#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error("kafka admin request failed: {0}")]
    Kafka(#[from] KafkaError),
    #[error("topic {topic} could not be created: {code}")]
    Create {
        topic: String,
        code: RDKafkaErrorCode,
    },
}

/// Creates the event topics of `aggregate_types` unless they exist.
pub async fn ensure_event_topics(
    settings: &KafkaSettings,
    aggregate_types: &[&str],
) -> Result<Vec<String>, TopicError> {
    let admin: AdminClient<DefaultClientContext> =
        crate::config::base(settings, "admin").create()?;
    let names: Vec<String> = aggregate_types
        .iter()
        .map(|a| event_topic(&settings.topic_prefix, a))
        .collect();
    let max_bytes = crate::config::MAX_BATCH_BYTES.to_string();
    let topics: Vec<NewTopic<'_>> = names
        .iter()
        .map(|name| {
            NewTopic::new(
                name,
                settings.partitions,
                TopicReplication::Fixed(settings.replication_factor),
            )
            // Events are kept: the topics are a replayable history for
            // analysts. Long.MAX_VALUE means "never" to every broker; the
            // conventional -1 is misread as "delete now" by some brokers.
            .set("retention.ms", RETAIN_FOREVER_MS)
            .set("cleanup.policy", "delete")
            .set("max.message.bytes", &max_bytes)
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin.create_topics(&topics, &options).await? {
        match result {
            Ok(name) => tracing::info!(topic = %name, "topic created"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(TopicError::Create { topic, code }),
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    #[test]
    fn topic_names_follow_the_convention() {
        assert_eq!(
            super::event_topic("pivotal", "customer"),
            "pivotal.customer.events"
        );
    }
}
