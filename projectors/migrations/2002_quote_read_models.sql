-- Read models of rate cards and quotes; `state` is the aggregate's state,
-- the other columns are copies for filtering and ordering.

CREATE TABLE rm_rate_cards
(
    organization_id uuid        NOT NULL,
    id              uuid        NOT NULL,
    name            text        NOT NULL,
    customer_id     uuid,
    archived        boolean     NOT NULL,
    state           jsonb       NOT NULL,
    version         bigint      NOT NULL,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    PRIMARY KEY (organization_id, id)
);
CREATE INDEX rm_rate_cards_customer ON rm_rate_cards (organization_id, customer_id);

CREATE TABLE rm_quotes
(
    organization_id uuid          NOT NULL,
    id              uuid          NOT NULL,
    number          text          NOT NULL,
    customer_id     uuid          NOT NULL,
    title           text          NOT NULL,
    status          text          NOT NULL,
    currency        text          NOT NULL,
    total           numeric(20,4) NOT NULL,
    valid_until     date          NOT NULL,
    revision        integer       NOT NULL,
    state           jsonb         NOT NULL,
    version         bigint        NOT NULL,
    created_at      timestamptz   NOT NULL,
    updated_at      timestamptz   NOT NULL,
    PRIMARY KEY (organization_id, id)
);
CREATE UNIQUE INDEX rm_quotes_number ON rm_quotes (organization_id, number);
CREATE INDEX rm_quotes_by_created ON rm_quotes (organization_id, created_at, id);
CREATE INDEX rm_quotes_by_status ON rm_quotes (organization_id, status);
CREATE INDEX rm_quotes_expiring ON rm_quotes (valid_until) WHERE status = 'sent';
