-- The feed of revoked sessions (WatchRevocations, see src/revocations.rs).
-- Every revocation takes the next number of `revocation_seq` in the
-- transaction that revokes, and stamps it on the sessions it ends. The row
-- lock on the counter makes concurrent revocations commit in the order of
-- their numbers, so a subscriber that has seen number N has seen every
-- revocation up to N: its cursor.
CREATE TABLE revocation_seq (
    id  INTEGER PRIMARY KEY,               -- always 1
    seq BIGINT  NOT NULL
);
INSERT INTO revocation_seq (id, seq) VALUES (1, 0);

ALTER TABLE refresh_families ADD COLUMN revoked_seq BIGINT;
CREATE INDEX refresh_families_revoked_seq ON refresh_families (revoked_seq);
