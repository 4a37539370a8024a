-- Failed logins, counted by the login throttle of every replica sharing the
-- store (see src/throttle.rs): one row per username ('username', as given)
-- or peer address ('peer': an IPv4 address, or an IPv6 /64 as
-- '2001:db8:1:2::/64') that failed recently. Each failure pushes `clear_at`
-- one interval past max(clear_at, now), in one upsert; the key is refused
-- while clear_at - now > (burst - 1) * interval. A row whose `clear_at` has
-- passed counts for nothing and is deleted by the periodic sweep, so the
-- table holds only the keys that failed within the last burst * interval.
CREATE TABLE login_failures (
    scope    TEXT   NOT NULL,               -- username | peer
    target   TEXT   NOT NULL,               -- the username or the address
    clear_at BIGINT NOT NULL,               -- when its failures stop counting
    failures BIGINT NOT NULL,               -- failures since it was last clear
    PRIMARY KEY (scope, target)
);
CREATE INDEX login_failures_clear_at ON login_failures (clear_at);
