-- Read models of organizations and users. `state` is the aggregate's own
-- state (pivotal-domain), which holds no secret by construction; the other
-- columns are copies for filtering and ordering.

CREATE TABLE rm_organizations
(
    id                uuid PRIMARY KEY,
    name              text        NOT NULL,
    default_currency  text        NOT NULL,
    time_zone         text        NOT NULL,
    state             jsonb       NOT NULL,
    version           bigint      NOT NULL,
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL
);

CREATE TABLE rm_users
(
    organization_id uuid        NOT NULL,
    id              uuid        NOT NULL,
    email           text        NOT NULL,
    first_name      text        NOT NULL,
    last_name       text        NOT NULL,
    status          text        NOT NULL,
    roles           text[]      NOT NULL,
    mfa_enabled     boolean     NOT NULL,
    last_login_at   timestamptz,
    login_count     bigint      NOT NULL,
    state           jsonb       NOT NULL,
    version         bigint      NOT NULL,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    PRIMARY KEY (organization_id, id)
);

CREATE INDEX rm_users_by_name ON rm_users (organization_id, lower(last_name), lower(first_name), id);
CREATE INDEX rm_users_by_created ON rm_users (organization_id, created_at, id);
CREATE INDEX rm_users_roles ON rm_users USING gin (roles);
