//! The persistent state of the auth service: credentials, sessions
//! (refresh-token families), refresh tokens, and the failed logins the
//! throttle counts (its [`FailureLedger`]), in a [`Store`].
//!
//! Every change holds the store's turn to write ([`Store::write`]) and every
//! multi-statement change is one transaction that starts with a write (see
//! [`keel_rpc::store`]); the refresh rotation hinges on
//! `UPDATE … SET spent_at = … WHERE token_hash = … AND spent_at IS NULL`:
//! of concurrent rotations of one token, exactly one updates a row.

use keel_rpc::store::sqlx::{self, Row};
use keel_rpc::store::{Migration, Migrations, Store, StoreConfig, StoreError};
use keel_rpc::with_store;

use crate::throttle::{FailureKey, FailureLedger, LedgerError, Standing};

/// Takes the next revocation number (see migration 0004): the row lock it
/// takes orders concurrent revocations by commit.
const NEXT_REVOCATION: &str = "UPDATE revocation_seq SET seq = seq + 1 WHERE id = 1 RETURNING seq";

/// The auth service's schema.
pub static MIGRATIONS: Migrations = Migrations::new(
    "auth",
    &[
        Migration {
            version: 1,
            description: "credentials, sessions and refresh tokens",
            sql: include_str!("../migrations/0001_init.sql"),
        },
        Migration {
            version: 2,
            description: "the refresh that spent a token, and its successor",
            sql: include_str!("../migrations/0002_refresh_retries.sql"),
        },
        Migration {
            version: 3,
            description: "failed logins, for the throttle shared by the replicas",
            sql: include_str!("../migrations/0003_login_failures.sql"),
        },
        Migration {
            version: 4,
            description: "the feed of revoked sessions",
            sql: include_str!("../migrations/0004_revocation_feed.sql"),
        },
    ],
);

/// A stored credential.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CredentialRow {
    /// The username (the `sub` of its tokens).
    pub username: String,
    /// The argon2id PHC string.
    pub password_hash: String,
    /// Space-separated scopes.
    pub scopes: String,
    /// Unix milliseconds.
    pub created_at: i64,
}

/// A new session and its first refresh token.
#[derive(Clone, Debug)]
pub struct NewSession<'a> {
    /// The family id (the `sid` of its access tokens).
    pub id: &'a str,
    /// The credential.
    pub subject: &'a str,
    /// Space-separated scopes of its tokens.
    pub scopes: &'a str,
    /// Unix milliseconds.
    pub now: i64,
    /// End of the session, Unix milliseconds.
    pub expires_at: i64,
    /// SHA-256 (hex) of the first refresh token.
    pub token_hash: &'a str,
    /// Expiry of the first refresh token, Unix milliseconds.
    pub token_expires_at: i64,
}

/// What presenting a refresh token to [`AuthStore::rotate`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rotation {
    /// The token was spent and the next one stored.
    Rotated {
        /// The session.
        family_id: String,
        /// Its subject.
        subject: String,
        /// Its scopes.
        scopes: String,
        /// Expiry of the next token, Unix milliseconds (never past the
        /// session's end).
        token_expires_at: i64,
    },
    /// No such token.
    Unknown,
    /// The token or its session has expired (nothing changed).
    Expired,
    /// The session was revoked (nothing changed).
    Revoked,
    /// The token had been spent already: its session is now revoked.
    Reused {
        /// The session, now revoked.
        family_id: String,
    },
}

/// The state of a session, for `Validate`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionState {
    /// Not revoked and not past its end.
    Active,
    /// Revoked, or past its end.
    Ended,
    /// No such session.
    Unknown,
}

/// The auth service's tables in a [`Store`]. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AuthStore {
    store: Store,
}

impl AuthStore {
    /// Connects following `config` and applies the migrations.
    pub async fn open(config: &StoreConfig) -> Result<Self, StoreError> {
        AuthStore::new(Store::connect(config).await?).await
    }

    /// Uses `store`, applying the migrations.
    pub async fn new(store: Store) -> Result<Self, StoreError> {
        store.migrate(&MIGRATIONS).await?;
        Ok(AuthStore { store })
    }

    /// The underlying store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Stores a credential unless the username is taken; `true` when created.
    pub async fn create_credential(
        &self,
        username: &str,
        password_hash: &str,
        scopes: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let _turn = self.store.write().await;
        let inserted = with_store!(&self.store, pool => {
            sqlx::query(
                "INSERT INTO credentials (username, password_hash, scopes, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $4) ON CONFLICT (username) DO NOTHING",
            )
            .bind(username)
            .bind(password_hash)
            .bind(scopes)
            .bind(now)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(inserted == 1)
    }

    /// The credential of `username`.
    pub async fn credential(&self, username: &str) -> Result<Option<CredentialRow>, StoreError> {
        let row = with_store!(&self.store, pool => {
            match sqlx::query(
                "SELECT username, password_hash, scopes, created_at FROM credentials \
                 WHERE username = $1",
            )
            .bind(username)
            .fetch_optional(pool)
            .await?
            {
                Some(row) => Some(CredentialRow {
                    username: row.try_get("username")?,
                    password_hash: row.try_get("password_hash")?,
                    scopes: row.try_get("scopes")?,
                    created_at: row.try_get("created_at")?,
                }),
                None => None,
            }
        });
        Ok(row)
    }

    /// Replaces the password hash of `username` if it is still `old` (an
    /// upgrade to new argon2 parameters must not undo a password change).
    pub async fn upgrade_password_hash(
        &self,
        username: &str,
        old: &str,
        new: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let _turn = self.store.write().await;
        let updated = with_store!(&self.store, pool => {
            sqlx::query(
                "UPDATE credentials SET password_hash = $1, updated_at = $2 \
                 WHERE username = $3 AND password_hash = $4",
            )
            .bind(new)
            .bind(now)
            .bind(username)
            .bind(old)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(updated == 1)
    }

    /// Stores a new session with its first refresh token, atomically.
    pub async fn start_session(&self, session: &NewSession<'_>) -> Result<(), StoreError> {
        let _turn = self.store.write().await;
        with_store!(&self.store, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "INSERT INTO refresh_families (id, subject, scopes, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(session.id)
            .bind(session.subject)
            .bind(session.scopes)
            .bind(session.now)
            .bind(session.expires_at)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO refresh_tokens (token_hash, family_id, issued_at, expires_at) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(session.token_hash)
            .bind(session.id)
            .bind(session.now)
            .bind(session.token_expires_at)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Spends the refresh token whose hash is `old_hash` and stores its
    /// successor `new_hash` (expiring at `new_expires_at`, capped by the
    /// session's end), atomically; or says why not. Presenting a spent token
    /// revokes its session, unless `request_id` (non-empty) is the one that
    /// spent it and its successor is still unused: then this is another
    /// attempt of that refresh, whose answer was lost, and `new_hash`
    /// replaces the successor.
    pub async fn rotate(
        &self,
        old_hash: &str,
        new_hash: &str,
        now: i64,
        new_expires_at: i64,
        request_id: &str,
    ) -> Result<Rotation, StoreError> {
        let spent_by = (!request_id.is_empty()).then_some(request_id);
        let _turn = self.store.write().await;
        let rotation = with_store!(&self.store, pool => {
            let mut tx = pool.begin().await?;
            // The write comes first: on SQLite it takes the write lock at
            // once, and on PostgreSQL a concurrent rotation of the same
            // token waits here and then finds `spent_at` set.
            let mut spent = sqlx::query(
                "UPDATE refresh_tokens SET spent_at = $1, spent_by = $3, replaced_by = $4 \
                 WHERE token_hash = $2 AND spent_at IS NULL \
                 RETURNING family_id, expires_at",
            )
            .bind(now)
            .bind(old_hash)
            .bind(spent_by)
            .bind(new_hash)
            .fetch_optional(&mut *tx)
            .await?;
            if spent.is_none() && let Some(request_id) = spent_by {
                // Another attempt of the refresh that spent it: its
                // successor, if nobody used it, gives way to `new_hash`.
                let superseded = sqlx::query(
                    "UPDATE refresh_tokens SET spent_at = $1, spent_by = '(superseded)' \
                     WHERE spent_at IS NULL AND token_hash = \
                     (SELECT replaced_by FROM refresh_tokens WHERE token_hash = $2 AND spent_by = $3)",
                )
                .bind(now)
                .bind(old_hash)
                .bind(request_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if superseded == 1 {
                    spent = sqlx::query(
                        "UPDATE refresh_tokens SET replaced_by = $1 WHERE token_hash = $2 \
                         RETURNING family_id, expires_at",
                    )
                    .bind(new_hash)
                    .bind(old_hash)
                    .fetch_optional(&mut *tx)
                    .await?;
                }
            }
            match spent {
                Some(row) => {
                    let family_id: String = row.try_get("family_id")?;
                    let token_expires_at: i64 = row.try_get("expires_at")?;
                    let family = sqlx::query(
                        "SELECT subject, scopes, expires_at, revoked_at FROM refresh_families \
                         WHERE id = $1",
                    )
                    .bind(&family_id)
                    .fetch_one(&mut *tx)
                    .await?;
                    let subject: String = family.try_get("subject")?;
                    let scopes: String = family.try_get("scopes")?;
                    let session_expires_at: i64 = family.try_get("expires_at")?;
                    let revoked_at: Option<i64> = family.try_get("revoked_at")?;
                    if revoked_at.is_some() {
                        tx.rollback().await?;
                        Rotation::Revoked
                    } else if token_expires_at <= now || session_expires_at <= now {
                        tx.rollback().await?;
                        Rotation::Expired
                    } else {
                        let token_expires_at = new_expires_at.min(session_expires_at);
                        sqlx::query(
                            "INSERT INTO refresh_tokens \
                             (token_hash, family_id, issued_at, expires_at) \
                             VALUES ($1, $2, $3, $4)",
                        )
                        .bind(new_hash)
                        .bind(&family_id)
                        .bind(now)
                        .bind(token_expires_at)
                        .execute(&mut *tx)
                        .await?;
                        tx.commit().await?;
                        Rotation::Rotated {
                            family_id,
                            subject,
                            scopes,
                            token_expires_at,
                        }
                    }
                }
                None => {
                    let known = sqlx::query(
                        "SELECT family_id FROM refresh_tokens WHERE token_hash = $1",
                    )
                    .bind(old_hash)
                    .fetch_optional(&mut *tx)
                    .await?;
                    match known {
                        None => {
                            tx.rollback().await?;
                            Rotation::Unknown
                        }
                        Some(row) => {
                            // Spent before: whoever holds it, the session is
                            // compromised.
                            let family_id: String = row.try_get("family_id")?;
                            let seq: i64 = sqlx::query_scalar(NEXT_REVOCATION)
                                .fetch_one(&mut *tx)
                                .await?;
                            sqlx::query(
                                "UPDATE refresh_families \
                                 SET revoked_at = $1, revoked_reason = 'reuse', revoked_seq = $3 \
                                 WHERE id = $2 AND revoked_at IS NULL",
                            )
                            .bind(now)
                            .bind(&family_id)
                            .bind(seq)
                            .execute(&mut *tx)
                            .await?;
                            tx.commit().await?;
                            Rotation::Reused { family_id }
                        }
                    }
                }
            }
        });
        Ok(rotation)
    }

    /// Revokes the session of the refresh token whose hash is `token_hash`;
    /// `true` when a session was revoked now.
    pub async fn revoke_token_session(
        &self,
        token_hash: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let revoked = self
            .revoke_where(
                "UPDATE refresh_families \
                 SET revoked_at = $1, revoked_reason = 'revoke', revoked_seq = $2 \
                 WHERE revoked_at IS NULL \
                 AND id = (SELECT family_id FROM refresh_tokens WHERE token_hash = $3)",
                now,
                token_hash,
            )
            .await?;
        Ok(revoked == 1)
    }

    /// Revokes every active session of `subject`; returns how many.
    pub async fn revoke_subject(&self, subject: &str, now: i64) -> Result<u64, StoreError> {
        self.revoke_where(
            "UPDATE refresh_families \
             SET revoked_at = $1, revoked_reason = 'revoke_all', revoked_seq = $2 \
             WHERE subject = $3 AND revoked_at IS NULL",
            now,
            subject,
        )
        .await
    }

    /// Runs `update` (binding `now`, the revocation's number and `arg`) in a
    /// transaction that first takes the next revocation number; returns the
    /// sessions it revoked. Nothing revoked: rolled back, the number unused.
    async fn revoke_where(
        &self,
        update: &'static str,
        now: i64,
        arg: &str,
    ) -> Result<u64, StoreError> {
        let _turn = self.store.write().await;
        let revoked = with_store!(&self.store, pool => {
            let mut tx = pool.begin().await?;
            let seq: i64 = sqlx::query_scalar(NEXT_REVOCATION).fetch_one(&mut *tx).await?;
            let revoked = sqlx::query(update)
                .bind(now)
                .bind(seq)
                .bind(arg)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            match revoked {
                0 => tx.rollback().await?,
                _ => tx.commit().await?,
            }
            revoked
        });
        Ok(revoked)
    }

    /// The number of the last revocation committed: the feed's newest cursor.
    pub async fn last_revocation(&self) -> Result<u64, StoreError> {
        let seq: i64 = with_store!(&self.store, pool => {
            sqlx::query_scalar("SELECT seq FROM revocation_seq WHERE id = 1")
                .fetch_one(pool)
                .await?
        });
        Ok(u64::try_from(seq).unwrap_or(0))
    }

    /// The sessions revoked after cursor `after` and at or after
    /// `revoked_since` (Unix milliseconds), in the order they were revoked,
    /// at most `limit`: `(session id, revocation number, revoked_at)`.
    pub async fn revocations_after(
        &self,
        after: u64,
        revoked_since: i64,
        limit: u32,
    ) -> Result<Vec<(String, u64, i64)>, StoreError> {
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let rows = with_store!(&self.store, pool => {
            sqlx::query(
                "SELECT id, revoked_seq, revoked_at FROM refresh_families \
                 WHERE revoked_seq > $1 AND revoked_at >= $2 \
                 ORDER BY revoked_seq LIMIT $3",
            )
            .bind(after)
            .bind(revoked_since)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?
            .iter()
            .map(|row| {
                let seq: i64 = row.try_get("revoked_seq")?;
                Ok::<_, sqlx::Error>((
                    row.try_get("id")?,
                    u64::try_from(seq).unwrap_or(0),
                    row.try_get("revoked_at")?,
                ))
            })
            .collect::<Result<Vec<_>, _>>()?
        });
        Ok(rows)
    }

    /// Whether session `id` is active at `now`.
    pub async fn session_state(&self, id: &str, now: i64) -> Result<SessionState, StoreError> {
        let row = with_store!(&self.store, pool => {
            match sqlx::query("SELECT expires_at, revoked_at FROM refresh_families WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await?
            {
                Some(row) => {
                    let expires_at: i64 = row.try_get("expires_at")?;
                    let revoked_at: Option<i64> = row.try_get("revoked_at")?;
                    Some((expires_at, revoked_at))
                }
                None => None,
            }
        });
        Ok(match row {
            None => SessionState::Unknown,
            Some((expires_at, revoked_at)) if revoked_at.is_some() || expires_at <= now => {
                SessionState::Ended
            }
            Some(_) => SessionState::Active,
        })
    }

    /// Deletes the sessions (and their tokens) that ended before `before`,
    /// Unix milliseconds; returns how many.
    pub async fn purge_sessions_ended_before(&self, before: i64) -> Result<u64, StoreError> {
        let _turn = self.store.write().await;
        let deleted = with_store!(&self.store, pool => {
            sqlx::query("DELETE FROM refresh_families WHERE expires_at < $1")
                .bind(before)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(deleted)
    }
}

/// The failed logins of the throttle, in the `login_failures` table: one row
/// per key, updated by one upsert per failure (atomic on both backends: on
/// PostgreSQL concurrent upserts of a row wait for each other's row lock; on
/// SQLite writers take turns).
#[tonic::async_trait]
impl FailureLedger for AuthStore {
    async fn standings(
        &self,
        keys: &[FailureKey<'_>],
        now: i64,
    ) -> Result<Vec<Option<Standing>>, LedgerError> {
        let mut standings = Vec::with_capacity(keys.len());
        // Two keys a query (a login has at most two: its peer and username).
        for pair in keys.chunks(2) {
            let (a, b) = (&pair[0], pair.get(1).unwrap_or(&pair[0]));
            let rows: Vec<(String, String, Standing)> = with_store!(&self.store, pool => {
                sqlx::query(
                    "SELECT scope, target, clear_at, failures FROM login_failures \
                     WHERE clear_at > $1 \
                     AND ((scope = $2 AND target = $3) OR (scope = $4 AND target = $5))",
                )
                .bind(now)
                .bind(a.scope.as_str())
                .bind(a.target)
                .bind(b.scope.as_str())
                .bind(b.target)
                .fetch_all(pool)
                .await
                .map_err(StoreError::from)?
                .iter()
                .map(|row| {
                    Ok::<_, sqlx::Error>((
                        row.try_get("scope")?,
                        row.try_get("target")?,
                        Standing {
                            clear_at: row.try_get("clear_at")?,
                            failures: row.try_get("failures")?,
                        },
                    ))
                })
                .collect::<Result<_, _>>()
                .map_err(StoreError::from)?
            });
            for key in pair {
                standings.push(
                    rows.iter()
                        .find(|(scope, target, _)| {
                            scope == key.scope.as_str() && target == key.target
                        })
                        .map(|(_, _, standing)| *standing),
                );
            }
        }
        Ok(standings)
    }

    async fn record(
        &self,
        failures: &[(FailureKey<'_>, i64)],
        now: i64,
    ) -> Result<Vec<Standing>, LedgerError> {
        let mut standings = Vec::with_capacity(failures.len());
        let _turn = self.store.write().await;
        // One statement per key, each atomic by itself: no transaction
        // holds a row lock while the next key is written.
        for (key, interval) in failures {
            let standing = with_store!(&self.store, pool => {
                let row = sqlx::query(
                    "INSERT INTO login_failures (scope, target, clear_at, failures) \
                     VALUES ($1, $2, $3, 1) \
                     ON CONFLICT (scope, target) DO UPDATE SET \
                     clear_at = CASE WHEN login_failures.clear_at > $4 \
                                THEN login_failures.clear_at + $5 ELSE $3 END, \
                     failures = CASE WHEN login_failures.clear_at > $4 \
                                THEN login_failures.failures + 1 ELSE 1 END \
                     RETURNING clear_at, failures",
                )
                .bind(key.scope.as_str())
                .bind(key.target)
                .bind(now.saturating_add(*interval))
                .bind(now)
                .bind(*interval)
                .fetch_one(pool)
                .await
                .map_err(StoreError::from)?;
                Standing {
                    clear_at: row.try_get("clear_at").map_err(StoreError::from)?,
                    failures: row.try_get("failures").map_err(StoreError::from)?,
                }
            });
            standings.push(standing);
        }
        Ok(standings)
    }

    async fn sweep(&self, now: i64) -> Result<u64, LedgerError> {
        let _turn = self.store.write().await;
        let deleted = with_store!(&self.store, pool => {
            sqlx::query("DELETE FROM login_failures WHERE clear_at <= $1")
                .bind(now)
                .execute(pool)
                .await
                .map_err(StoreError::from)?
                .rows_affected()
        });
        Ok(deleted)
    }
}
