//! Client configurations.

use pivotal_domain::envelope::MAX_EVENT_BYTES;
use pivotal_settings::KafkaSettings;
use rdkafka::ClientConfig;

/// The largest record batch a producer sends and an event topic accepts
/// (`message.max.bytes`, `max.message.bytes`): the largest event with room
/// for its headers and the batch's framing.
pub const MAX_BATCH_BYTES: usize = MAX_EVENT_BYTES + 64 * 1024;

/// Common settings of every client.
pub fn base(settings: &KafkaSettings, client_suffix: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &settings.brokers)
        .set(
            "client.id",
            format!("{}-{client_suffix}", settings.client_id),
        )
        .set("socket.keepalive.enable", "true")
        // librdkafka backs off reconnects up to 10 s, so a client could
        // sit idle that long after its broker came back; with the Java
        // client's 1 s, a client reconnects within about a second of its
        // broker's return (the relay in the broker-outage test: under a
        // second after the restart, against about 7 s before).
        .set("reconnect.backoff.max.ms", "1000");
    config
}

/// An idempotent producer: `acks=all`, `enable.idempotence=true`, so retries
/// never duplicate or reorder messages within a partition.
pub fn producer(settings: &KafkaSettings) -> ClientConfig {
    let mut config = base(settings, "relay");
    config
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("max.in.flight.requests.per.connection", "5")
        .set("linger.ms", "5")
        .set("compression.type", "none")
        // Kafka's default of 1 MB would leave the largest event (about
        // 0.97 MB) 3% to spare (ADR 0029).
        .set("message.max.bytes", MAX_BATCH_BYTES.to_string())
        // Kafka's own delivery timeout: an outage shorter than this is
        // waited out by the messages already queued, with no retry of the
        // batch and no producer epoch bump.
        .set("message.timeout.ms", "120000")
        // Keys are aggregate ids; the default partitioner hashes them like the
        // Java client (murmur2), so other producers agree on partitions.
        .set("partitioner", "murmur2_random");
    config
}

/// A consumer-group member that stores each message's offset itself, once
/// its work is durable; librdkafka commits the stored offsets every
/// `commit_interval_ms`, when a partition is revoked and when the consumer
/// closes (ADR 0032). Nothing is committed that was not stored.
pub fn consumer(settings: &KafkaSettings, group_id: &str) -> ClientConfig {
    let mut config = base(settings, "projector");
    config
        .set("group.id", group_id)
        .set("enable.auto.commit", "true")
        .set(
            "auto.commit.interval.ms",
            settings.commit_interval_ms.max(1).to_string(),
        )
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set(
            "session.timeout.ms",
            settings.session_timeout_ms.get().to_string(),
        )
        .set(
            "heartbeat.interval.ms",
            (settings.session_timeout_ms.get() / 5).max(1).to_string(),
        )
        // Also the rebalance timeout: how long a join waits for members that
        // died without leaving.
        .set(
            "max.poll.interval.ms",
            pivotal_settings::REBALANCE_TIMEOUT_MS.to_string(),
        )
        .set("enable.partition.eof", "false")
        // Freshness on a broker that holds every fetch for the whole wait
        // (tansu); Apache Kafka answers as soon as data arrives.
        .set("fetch.wait.max.ms", settings.fetch_wait_ms.to_string())
        // Prefetch at most 8 MiB (librdkafka's default is 64 MiB): a
        // projector applies a few hundred events per transaction, so more
        // read-ahead only costs resident memory.
        .set("queued.max.messages.kbytes", "8192");
    config
}
