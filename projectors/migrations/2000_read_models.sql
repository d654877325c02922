-- Bookkeeping shared by every projection (docs/adr/0004).

-- Last applied version of each aggregate, per projection: makes redelivered
-- events no-ops and exposes gaps.
CREATE TABLE projection_versions
(
    projection     text   NOT NULL,
    aggregate_type text   NOT NULL,
    aggregate_id   text   NOT NULL,
    version        bigint NOT NULL,
    PRIMARY KEY (projection, aggregate_type, aggregate_id)
);

-- Next Kafka offset per projection and partition, written in the same
-- transaction as the read-model change.
CREATE TABLE projection_offsets
(
    projection  text        NOT NULL,
    topic       text        NOT NULL,
    partition   integer     NOT NULL,
    next_offset bigint      NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, topic, partition)
);

-- Highest global position applied per projection (consistency tokens).
CREATE TABLE projection_positions
(
    projection    text PRIMARY KEY,
    last_position bigint      NOT NULL DEFAULT 0,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- The customers read model: one row per customer, shaped for the GraphQL
-- queries (filter by status and tag, search by name or email, order by name
-- or creation time), organization on every row.
CREATE TABLE rm_customers
(
    organization_id     uuid        NOT NULL,
    id                  uuid        NOT NULL,
    legal_name          text        NOT NULL,
    display_name        text        NOT NULL,
    email               text,
    phone               text,
    billing_line1       text,
    billing_line2       text,
    billing_city        text,
    billing_region      text,
    billing_postal_code text,
    billing_country     text,
    tax_number          text,
    currency            text        NOT NULL,
    payment_terms_days  integer     NOT NULL,
    tags                text[]      NOT NULL DEFAULT '{}',
    status              text        NOT NULL,
    archive_reason      text,
    version             bigint      NOT NULL,
    created_at          timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL,
    created_by          uuid,
    updated_by          uuid,
    PRIMARY KEY (organization_id, id)
);

CREATE INDEX rm_customers_by_name ON rm_customers (organization_id, lower(display_name), id);
CREATE INDEX rm_customers_by_created ON rm_customers (organization_id, created_at, id);
CREATE INDEX rm_customers_by_status ON rm_customers (organization_id, status);
CREATE INDEX rm_customers_tags ON rm_customers USING gin (tags);
