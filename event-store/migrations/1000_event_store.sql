-- The event store: postgres-es's `events` table, extended with a global log
-- order that a reader can follow without skipping events (docs/adr/0002).

CREATE OR REPLACE FUNCTION pivotal_uuid_v7() RETURNS uuid
LANGUAGE sql VOLATILE AS $$
  -- RFC 9562 UUIDv7: 48-bit Unix milliseconds, version 7, variant 10, random rest.
  SELECT encode(
    set_bit(
      set_bit(
        overlay(uuid_send(gen_random_uuid())
                placing substring(int8send((extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
                FROM 1 FOR 6),
        52, 1),
      53, 1),
    'hex')::uuid
$$;

CREATE TABLE events
(
    aggregate_type  text                         NOT NULL,
    aggregate_id    text                         NOT NULL,
    sequence        bigint CHECK (sequence >= 0) NOT NULL,
    event_type      text                         NOT NULL,
    event_version   text                         NOT NULL,
    payload         json                         NOT NULL,
    metadata        json                         NOT NULL,
    -- Columns below are filled by defaults; postgres-es never names them.
    global_position bigint GENERATED ALWAYS AS IDENTITY,
    tx_id           xid8                         NOT NULL DEFAULT pg_current_xact_id(),
    event_id        uuid                         NOT NULL DEFAULT pivotal_uuid_v7(),
    recorded_at     timestamptz                  NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);

CREATE UNIQUE INDEX events_global_position ON events (global_position);
CREATE UNIQUE INDEX events_event_id ON events (event_id);
-- The relay's cursor: (tx_id, global_position), read below the snapshot xmin.
CREATE INDEX events_log_order ON events (tx_id, global_position);

-- Events are facts: never updated, never deleted.
CREATE OR REPLACE FUNCTION pivotal_events_are_immutable() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'events are append-only' USING ERRCODE = 'restrict_violation';
END
$$;
CREATE TRIGGER events_append_only
  BEFORE UPDATE OR DELETE ON events
  FOR EACH ROW EXECUTE FUNCTION pivotal_events_are_immutable();

CREATE TABLE snapshots
(
    aggregate_type   text                                 NOT NULL,
    aggregate_id     text                                 NOT NULL,
    last_sequence    bigint CHECK (last_sequence >= 0)    NOT NULL,
    current_snapshot bigint CHECK (current_snapshot >= 0) NOT NULL,
    payload          json                                 NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, last_sequence)
);

-- Where the relay has published up to, per relay deployment.
CREATE TABLE relay_checkpoints
(
    relay_name      text PRIMARY KEY,
    last_tx_id      xid8        NOT NULL DEFAULT '0'::xid8,
    last_position   bigint      NOT NULL DEFAULT 0,
    published_total bigint      NOT NULL DEFAULT 0,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- Responses to requests that carried an Idempotency-Key (docs/adr/0005).
CREATE TABLE idempotency_keys
(
    organization_id uuid        NOT NULL,
    idempotency_key text        NOT NULL,
    request_hash    text        NOT NULL,
    status_code     smallint,
    response_body   jsonb,
    response_headers jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    completed_at    timestamptz,
    PRIMARY KEY (organization_id, idempotency_key)
);
