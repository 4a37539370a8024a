-- The user service's schema, the same for SQLite and PostgreSQL.
-- Times are Unix milliseconds.

-- Users; `seq` orders them and makes their id (`u-000042`).
CREATE TABLE users (
    seq        BIGINT PRIMARY KEY,
    id         TEXT   NOT NULL UNIQUE,
    name       TEXT   NOT NULL,
    email      TEXT   NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- The next `seq`, handed out by `UPDATE … RETURNING` (a row lock on
-- PostgreSQL, the write lock on SQLite), so concurrent writers never collide.
CREATE TABLE user_seq (
    name TEXT   PRIMARY KEY,
    next BIGINT NOT NULL
);
INSERT INTO user_seq (name, next) VALUES ('users', 1);
