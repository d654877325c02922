-- The credential vault (docs/adr/0007): secrets that must never reach an
-- event, a topic, a read model, a log line or a response. Rows here are
-- written in the same transaction as the user events that refer to them.
-- Nothing reads these tables but the command API's identity endpoints.

-- Sign-in key and password hash (argon2id, PHC string) of every user.
CREATE TABLE credentials
(
    user_id             uuid PRIMARY KEY,
    organization_id     uuid        NOT NULL,
    -- Lower-cased email: one account per address across organizations.
    email_normalized    text        NOT NULL UNIQUE,
    -- NULL while an invited user has not chosen a password.
    password_hash       text,
    password_changed_at timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now()
);

-- Invitations to choose a first password: SHA-256 of the token.
CREATE TABLE invitations
(
    token_hash bytea PRIMARY KEY,
    user_id    uuid        NOT NULL REFERENCES credentials (user_id),
    expires_at timestamptz NOT NULL,
    used_at    timestamptz
);

-- A TOTP factor: the secret encrypted (ChaCha20-Poly1305, nonce || ciphertext).
-- Unconfirmed until the first valid code. last_step refuses code replay.
CREATE TABLE mfa_factors
(
    user_id          uuid PRIMARY KEY REFERENCES credentials (user_id),
    secret_encrypted bytea       NOT NULL,
    confirmed_at     timestamptz,
    last_step        bigint      NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL DEFAULT now()
);

-- Single-use recovery codes: SHA-256 of each code.
CREATE TABLE recovery_codes
(
    user_id   uuid        NOT NULL REFERENCES credentials (user_id),
    code_hash bytea       NOT NULL,
    used_at   timestamptz,
    PRIMARY KEY (user_id, code_hash)
);

-- A session: every refresh token descends from one sign-in.
CREATE TABLE token_families
(
    family_id       uuid PRIMARY KEY,
    user_id         uuid        NOT NULL REFERENCES credentials (user_id),
    organization_id uuid        NOT NULL,
    mfa             boolean     NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    revoked_at      timestamptz,
    revoked_reason  text
);
CREATE INDEX token_families_user ON token_families (user_id) WHERE revoked_at IS NULL;

-- Refresh tokens: SHA-256 of each opaque token; used once, then replaced.
CREATE TABLE refresh_tokens
(
    token_hash bytea PRIMARY KEY,
    family_id  uuid        NOT NULL REFERENCES token_families (family_id),
    issued_at  timestamptz NOT NULL DEFAULT now(),
    used_at    timestamptz
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);

-- The step between a correct password and a second factor.
CREATE TABLE mfa_challenges
(
    challenge_hash bytea PRIMARY KEY,
    user_id        uuid        NOT NULL REFERENCES credentials (user_id),
    expires_at     timestamptz NOT NULL,
    attempts       integer     NOT NULL DEFAULT 0,
    used_at        timestamptz,
    ip_address     text,
    user_agent     text
);
