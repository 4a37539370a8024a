//! The token store on both backends: rotation outcomes with explicit clocks,
//! and concurrent rotations of one token (exactly one wins); the throttle's
//! ledger of failed logins, shared by two stores on one database.

mod common;

use std::sync::Arc;

use auth_service::{
    AuthStore, FailureKey, FailureLedger, NewSession, Rotation, SessionState, Standing,
    ThrottleScope, refresh_token_hash,
};
use common::{Db, TestDb, auth_store};

const HOUR: i64 = 3_600_000;

async fn with_credential(store: &AuthStore, username: &str) {
    assert!(
        store
            .create_credential(username, "$argon2id$placeholder", "a b", 0)
            .await
            .unwrap()
    );
}

/// A session `id` of `subject` whose first token is `token`, at time 0.
async fn session(store: &AuthStore, id: &str, subject: &str, token: &str) {
    store
        .start_session(&NewSession {
            id,
            subject,
            scopes: "a b",
            now: 0,
            expires_at: 10 * HOUR,
            token_hash: &refresh_token_hash(token),
            token_expires_at: 2 * HOUR,
        })
        .await
        .unwrap();
}

async fn rotate(store: &AuthStore, old: &str, new: &str, now: i64) -> Rotation {
    rotate_as(store, old, new, now, "").await
}

/// [`rotate`] by the refresh named `request_id`.
async fn rotate_as(
    store: &AuthStore,
    old: &str,
    new: &str,
    now: i64,
    request_id: &str,
) -> Rotation {
    store
        .rotate(
            &refresh_token_hash(old),
            &refresh_token_hash(new),
            now,
            now + 2 * HOUR,
            request_id,
        )
        .await
        .unwrap()
}

async fn credentials_are_unique_and_read_back(db: Db) {
    let test = TestDb::new(db).await;
    let store = auth_store(&test).await;
    assert!(
        store
            .create_credential("ada", "h1", "x y", 5)
            .await
            .unwrap()
    );
    assert!(!store.create_credential("ada", "h2", "z", 6).await.unwrap());
    let ada = store.credential("ada").await.unwrap().unwrap();
    assert_eq!(
        (
            ada.username.as_str(),
            ada.password_hash.as_str(),
            ada.scopes.as_str(),
            ada.created_at
        ),
        ("ada", "h1", "x y", 5)
    );
    assert_eq!(store.credential("bob").await.unwrap(), None);
    // A hash upgrade applies only over the hash it replaces.
    assert!(
        !store
            .upgrade_password_hash("ada", "other", "h3", 7)
            .await
            .unwrap()
    );
    assert!(
        store
            .upgrade_password_hash("ada", "h1", "h3", 7)
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .credential("ada")
            .await
            .unwrap()
            .unwrap()
            .password_hash,
        "h3"
    );
    store.store().close().await;
}

async fn rotation_spends_and_chains(db: Db) {
    let test = TestDb::new(db).await;
    let store = auth_store(&test).await;
    with_credential(&store, "ada").await;
    session(&store, "s1", "ada", "t1").await;

    match rotate(&store, "t1", "t2", HOUR).await {
        Rotation::Rotated {
            family_id,
            subject,
            scopes,
            token_expires_at,
        } => {
            assert_eq!(
                (family_id.as_str(), subject.as_str(), scopes.as_str()),
                ("s1", "ada", "a b")
            );
            assert_eq!(token_expires_at, 3 * HOUR);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        rotate(&store, "t2", "t3", HOUR).await,
        Rotation::Rotated { .. }
    ));
    assert_eq!(rotate(&store, "nope", "t9", HOUR).await, Rotation::Unknown);
    assert_eq!(
        store.session_state("s1", HOUR).await.unwrap(),
        SessionState::Active
    );

    // Reusing t1 (spent) revokes the session: t3, still unspent, no longer works.
    assert_eq!(
        rotate(&store, "t1", "t4", HOUR).await,
        Rotation::Reused {
            family_id: "s1".into()
        }
    );
    assert_eq!(
        store.session_state("s1", HOUR).await.unwrap(),
        SessionState::Ended
    );
    assert_eq!(rotate(&store, "t3", "t5", HOUR).await, Rotation::Revoked);
    assert_eq!(
        store.session_state("nope", HOUR).await.unwrap(),
        SessionState::Unknown
    );
    store.store().close().await;
}

/// Another attempt of a committed refresh whose answer was lost (the same
/// request id) replaces the unused successor; anything else that presents a
/// spent token is a reuse.
async fn a_retried_refresh_replaces_its_unused_successor(db: Db) {
    let test = TestDb::new(db).await;
    let store = auth_store(&test).await;
    with_credential(&store, "ada").await;
    session(&store, "s1", "ada", "t1").await;

    assert!(matches!(
        rotate_as(&store, "t1", "t2", HOUR, "r1").await,
        Rotation::Rotated { .. }
    ));
    // The answer carrying t2 was lost; the client sends the refresh again.
    assert!(matches!(
        rotate_as(&store, "t1", "t3", HOUR, "r1").await,
        Rotation::Rotated { family_id, .. } if family_id == "s1"
    ));
    // t2 gave way to t3: presenting it is a reuse, as is any other refresh of t1.
    assert!(matches!(
        rotate_as(&store, "t3", "t4", HOUR, "r2").await,
        Rotation::Rotated { .. }
    ));
    // Once t3 was used, the retry of r1 no longer applies: t1 is reused.
    assert_eq!(
        rotate_as(&store, "t1", "t5", HOUR, "r1").await,
        Rotation::Reused {
            family_id: "s1".into()
        }
    );
    assert_eq!(
        store.session_state("s1", HOUR).await.unwrap(),
        SessionState::Ended
    );

    // A superseded successor presented later revokes its session too.
    session(&store, "s2", "ada", "u1").await;
    rotate_as(&store, "u1", "u2", HOUR, "q1").await;
    rotate_as(&store, "u1", "u3", HOUR, "q1").await;
    assert_eq!(
        rotate_as(&store, "u2", "u4", HOUR, "q2").await,
        Rotation::Reused {
            family_id: "s2".into()
        }
    );
    // And without a request id, every second presentation is a reuse.
    session(&store, "s3", "ada", "v1").await;
    rotate(&store, "v1", "v2", HOUR).await;
    assert_eq!(
        rotate(&store, "v1", "v3", HOUR).await,
        Rotation::Reused {
            family_id: "s3".into()
        }
    );
    store.store().close().await;
}

async fn expiry_is_enforced_and_capped_by_the_session(db: Db) {
    let test = TestDb::new(db).await;
    let store = auth_store(&test).await;
    with_credential(&store, "ada").await;
    session(&store, "s1", "ada", "t1").await;
    // The token expires at 2 h: nothing changes, it is not spent.
    assert_eq!(
        rotate(&store, "t1", "t2", 2 * HOUR).await,
        Rotation::Expired
    );
    assert_eq!(
        rotate(&store, "t1", "t2", 2 * HOUR + 1).await,
        Rotation::Expired
    );

    session(&store, "s2", "ada", "u1").await;
    // The successor of a token rotated at 9 h would expire at 11 h: capped at
    // the session's end, 10 h.
    let mut now = HOUR;
    let mut token = "u1".to_owned();
    for i in 2..=9 {
        let next = format!("u{i}");
        match rotate(&store, &token, &next, now).await {
            Rotation::Rotated {
                token_expires_at, ..
            } => {
                assert_eq!(token_expires_at, (now + 2 * HOUR).min(10 * HOUR));
            }
            other => panic!("{other:?}"),
        }
        token = next;
        now += HOUR;
    }
    assert_eq!(
        rotate(&store, &token, "late", 10 * HOUR).await,
        Rotation::Expired
    );
    assert_eq!(
        store.session_state("s2", 10 * HOUR).await.unwrap(),
        SessionState::Ended
    );
    store.store().close().await;
}

async fn revocation_by_token_and_by_subject(db: Db) {
    let test = TestDb::new(db).await;
    let store = auth_store(&test).await;
    with_credential(&store, "ada").await;
    with_credential(&store, "bob").await;
    session(&store, "a1", "ada", "ta1").await;
    session(&store, "a2", "ada", "ta2").await;
    session(&store, "b1", "bob", "tb1").await;

    assert!(
        store
            .revoke_token_session(&refresh_token_hash("ta1"), 1)
            .await
            .unwrap()
    );
    assert!(
        !store
            .revoke_token_session(&refresh_token_hash("ta1"), 2)
            .await
            .unwrap()
    );
    assert!(
        !store
            .revoke_token_session(&refresh_token_hash("unknown"), 2)
            .await
            .unwrap()
    );
    assert_eq!(rotate(&store, "ta1", "x", 3).await, Rotation::Revoked);

    assert_eq!(
        store.revoke_subject("ada", 4).await.unwrap(),
        1,
        "a2 only: a1 was revoked"
    );
    assert_eq!(store.revoke_subject("ada", 5).await.unwrap(), 0);
    assert_eq!(rotate(&store, "ta2", "y", 6).await, Rotation::Revoked);
    assert!(matches!(
        rotate(&store, "tb1", "z", 6).await,
        Rotation::Rotated { .. }
    ));

    // The feed: each revocation numbered in commit order, none for the
    // revocations that revoked nothing; a cursor skips what it has seen,
    // and `revoked_since` what no longer matters.
    assert_eq!(store.last_revocation().await.unwrap(), 2);
    assert_eq!(
        store.revocations_after(0, 0, 10).await.unwrap(),
        [("a1".to_owned(), 1, 1), ("a2".to_owned(), 2, 4)]
    );
    assert_eq!(
        store.revocations_after(1, 0, 10).await.unwrap(),
        [("a2".to_owned(), 2, 4)]
    );
    assert_eq!(store.revocations_after(0, 2, 1).await.unwrap().len(), 1);
    assert_eq!(store.revocations_after(0, 5, 10).await.unwrap(), []);
    // Reuse detection revokes through the feed too.
    assert!(matches!(
        rotate(&store, "tb1", "w", 7).await,
        Rotation::Reused { .. }
    ));
    assert_eq!(
        store.revocations_after(2, 0, 10).await.unwrap(),
        [("b1".to_owned(), 3, 7)]
    );

    // Sessions ended long ago are purged with their tokens.
    assert_eq!(
        store.purge_sessions_ended_before(11 * HOUR).await.unwrap(),
        3
    );
    assert_eq!(rotate(&store, "z", "zz", 7).await, Rotation::Unknown);
    store.store().close().await;
}

/// Many tasks rotate the same token at once, through two stores (two
/// connection pools, as two replicas would; each store queues its own
/// writers, so the database arbitrates between the two): exactly one
/// succeeds, the others see a spent token, and the session ends revoked
/// (reuse detection), which the winner's new token then shows.
async fn concurrent_rotations_of_one_token_exactly_one_wins(db: Db) {
    let test = TestDb::new(db).await;
    let store = auth_store(&test).await;
    let replicas = [store.clone(), auth_store(&test).await];
    with_credential(&store, "ada").await;
    const RACERS: usize = 8;
    for round in 0..10 {
        let family = format!("s{round}");
        let first = format!("first-{round}");
        session(&store, &family, "ada", &first).await;
        let barrier = Arc::new(tokio::sync::Barrier::new(RACERS));
        let racers: Vec<_> = (0..RACERS)
            .map(|i| {
                let store = replicas[i % 2].clone();
                let barrier = barrier.clone();
                let first = first.clone();
                tokio::spawn(async move {
                    let next = format!("next-{round}-{i}");
                    // Half of them name their refresh: distinct refreshes
                    // still race for one token.
                    let id = if i % 2 == 1 {
                        format!("r{i}")
                    } else {
                        String::new()
                    };
                    barrier.wait().await;
                    (
                        next.clone(),
                        rotate_as(&store, &first, &next, HOUR, &id).await,
                    )
                })
            })
            .collect();
        let mut winners = Vec::new();
        let mut reused = 0;
        for racer in racers {
            match racer.await.unwrap() {
                (next, Rotation::Rotated { .. }) => winners.push(next),
                (_, Rotation::Reused { family_id }) => {
                    assert_eq!(family_id, family);
                    reused += 1;
                }
                (_, other) => panic!("round {round}: {other:?}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: exactly one rotation wins");
        assert_eq!(reused, RACERS - 1);
        assert_eq!(
            rotate(&store, &winners[0], "after", HOUR).await,
            Rotation::Revoked,
            "the losers' reuse revoked the session"
        );
    }
    for replica in replicas {
        replica.store().close().await;
    }
}

async fn migrations_are_idempotent_and_recorded_per_service(db: Db) {
    let test = TestDb::new(db).await;
    let store = test.store().await.expect("connect store");
    AuthStore::new(store.clone()).await.unwrap();
    AuthStore::new(store.clone()).await.unwrap();
    let applied: i64 = keel_rpc::with_store!(&store, pool => {
        keel_rpc::store::sqlx::query_scalar("SELECT COUNT(*) FROM _keel_auth_migrations")
            .fetch_one(pool)
            .await
            .unwrap()
    });
    assert_eq!(applied, 4, "each of the four steps once");
    store.close().await;
}

const ADA: FailureKey<'static> = FailureKey {
    scope: ThrottleScope::Username,
    target: "ada",
};
const ADA_AS_PEER: FailureKey<'static> = FailureKey {
    scope: ThrottleScope::Peer,
    target: "ada",
};
const PEER: FailureKey<'static> = FailureKey {
    scope: ThrottleScope::Peer,
    target: "203.0.113.7",
};

async fn rows(store: &AuthStore) -> i64 {
    keel_rpc::with_store!(store.store(), pool => {
        keel_rpc::store::sqlx::query_scalar("SELECT COUNT(*) FROM login_failures")
            .fetch_one(pool)
            .await
            .unwrap()
    })
}

async fn login_failures_leak_away_per_key_and_are_swept(db: Db) {
    let test = TestDb::new(db).await;
    let store = auth_store(&test).await;
    const T0: i64 = 1_700_000_000_000;
    let standing = |clear_at, failures| Standing { clear_at, failures };

    assert_eq!(
        store.standings(&[PEER, ADA], T0).await.unwrap(),
        [None, None]
    );
    for n in 1..=3 {
        let recorded = store
            .record(&[(PEER, 2_000), (ADA, 10_000)], T0)
            .await
            .unwrap();
        assert_eq!(
            recorded,
            [standing(T0 + n * 2_000, n), standing(T0 + n * 10_000, n)]
        );
    }
    // One row per key, however many failures; a scope is part of the key.
    assert_eq!(rows(&store).await, 2);
    assert_eq!(
        store.standings(&[ADA_AS_PEER, ADA], T0).await.unwrap(),
        [None, Some(standing(T0 + 30_000, 3))]
    );
    // Odd numbers of keys, and keys given twice.
    assert_eq!(
        store.standings(&[ADA, PEER, ADA], T0).await.unwrap(),
        [
            Some(standing(T0 + 30_000, 3)),
            Some(standing(T0 + 6_000, 3)),
            Some(standing(T0 + 30_000, 3)),
        ]
    );
    // A failure later pushes from where the key stands...
    assert_eq!(
        store.record(&[(ADA, 10_000)], T0 + 5_000).await.unwrap(),
        [standing(T0 + 40_000, 4)]
    );
    // ...and from `now` once the key is clear, starting the count again.
    assert_eq!(store.standings(&[PEER], T0 + 6_000).await.unwrap(), [None]);
    assert_eq!(
        store.record(&[(PEER, 2_000)], T0 + 7_000).await.unwrap(),
        [standing(T0 + 9_000, 1)]
    );

    // The sweep deletes what no longer counts, and only that.
    assert_eq!(store.sweep(T0 + 8_999).await.unwrap(), 0);
    assert_eq!(store.sweep(T0 + 9_000).await.unwrap(), 1);
    assert_eq!(rows(&store).await, 1);
    assert_eq!(
        store.standings(&[ADA], T0 + 9_000).await.unwrap(),
        [Some(standing(T0 + 40_000, 4))]
    );
    assert_eq!(store.sweep(T0 + 40_000).await.unwrap(), 1);
    assert_eq!(rows(&store).await, 0);
    store.store().close().await;
}

async fn concurrent_failures_on_two_stores_are_all_counted(db: Db) {
    let test = TestDb::new(db).await;
    // Two replicas' stores (two pools) on one database.
    let stores = [auth_store(&test).await, auth_store(&test).await];
    const T0: i64 = 1_700_000_000_000;
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let store = stores[i % 2].clone();
            tokio::spawn(async move { store.record(&[(PEER, 1_000), (ADA, 1_000)], T0).await })
        })
        .collect();
    let mut seen = Vec::new();
    for task in tasks {
        let recorded = task.await.unwrap().expect("recorded");
        seen.push(recorded[1].failures);
    }
    // Each upsert saw its own count: none lost, none counted twice.
    seen.sort();
    assert_eq!(seen, (1..=40).collect::<Vec<i64>>());
    for store in &stores {
        assert_eq!(
            store.standings(&[PEER, ADA], T0).await.unwrap(),
            [
                Some(Standing {
                    clear_at: T0 + 40_000,
                    failures: 40
                }),
                Some(Standing {
                    clear_at: T0 + 40_000,
                    failures: 40
                }),
            ]
        );
    }
    for store in stores {
        store.store().close().await;
    }
}

/// The same in Redis (`[rate_limit] backend`): two replicas' ledgers count
/// concurrent failures of one key exactly once each.
#[tokio::test]
async fn concurrent_failures_on_two_redis_ledgers_are_all_counted() {
    let redis = keel_rpc::testing::TestRedis::start().await.expect("redis");
    let mut config = keel_rpc::config::Config::<()>::default();
    config.rate_limit.backend = Some(redis.url());
    let ledger = || {
        let ledger = auth_service::RedisLedger::new(&config.rate_limit, &config.client.tls);
        Arc::new(ledger.expect("client").expect("a backend"))
    };
    let ledgers = [ledger(), ledger()];
    // Keys expire at `clear_at` on Redis's clock: count from now.
    let base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let ledger = ledgers[i % 2].clone();
            tokio::spawn(async move { ledger.record(&[(PEER, 1_000), (ADA, 1_000)], base).await })
        })
        .collect();
    let mut seen = Vec::new();
    for task in tasks {
        seen.push(task.await.unwrap().expect("recorded")[1].failures);
    }
    seen.sort();
    assert_eq!(seen, (1..=40).collect::<Vec<i64>>());
    let expected = Standing {
        clear_at: base + 40_000,
        failures: 40,
    };
    for ledger in &ledgers {
        assert_eq!(
            ledger
                .standings(&[PEER, ADA, ADA_AS_PEER], base)
                .await
                .unwrap(),
            [Some(expected), Some(expected), None]
        );
        assert_eq!(
            ledger.standings(&[ADA], base + 40_000).await.unwrap(),
            [None]
        );
    }
}

keel_rpc::on_both_backends!(
    login_failures_leak_away_per_key_and_are_swept,
    concurrent_failures_on_two_stores_are_all_counted,
    credentials_are_unique_and_read_back,
    rotation_spends_and_chains,
    a_retried_refresh_replaces_its_unused_successor,
    expiry_is_enforced_and_capped_by_the_session,
    revocation_by_token_and_by_subject,
    concurrent_rotations_of_one_token_exactly_one_wins,
    migrations_are_idempotent_and_recorded_per_service,
);
