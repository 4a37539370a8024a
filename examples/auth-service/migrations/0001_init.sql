-- The auth service's schema, the same for SQLite and PostgreSQL.
-- Times are Unix milliseconds; a NULL time means "not yet".

-- Who can log in. `username` is the `sub` of their tokens.
CREATE TABLE credentials (
    username      TEXT   PRIMARY KEY,
    password_hash TEXT   NOT NULL,          -- argon2id, PHC string
    scopes        TEXT   NOT NULL,          -- space-separated
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);

-- A session: the refresh tokens issued from one login, each rotated into
-- the next. Revoking the family ends the session.
CREATE TABLE refresh_families (
    id             TEXT   PRIMARY KEY,
    subject        TEXT   NOT NULL REFERENCES credentials (username) ON DELETE CASCADE,
    scopes         TEXT   NOT NULL,
    created_at     BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL,         -- absolute end of the session
    revoked_at     BIGINT,
    revoked_reason TEXT                     -- revoke | revoke_all | reuse
);
CREATE INDEX refresh_families_subject ON refresh_families (subject);
CREATE INDEX refresh_families_expires_at ON refresh_families (expires_at);

-- Refresh tokens, by the SHA-256 (hex) of the token: the token itself is
-- never stored. Spent tokens are kept until their family expires, to detect
-- reuse.
CREATE TABLE refresh_tokens (
    token_hash TEXT   PRIMARY KEY,
    family_id  TEXT   NOT NULL REFERENCES refresh_families (id) ON DELETE CASCADE,
    issued_at  BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    spent_at   BIGINT
);
CREATE INDEX refresh_tokens_family_id ON refresh_tokens (family_id);
