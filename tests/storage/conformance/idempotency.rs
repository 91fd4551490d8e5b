//! Idempotency keys: one atomic claim per (scope, key), the answer replayed to the same
//! request, refused to another, and freed by expiry, release or abandonment.

use user_service::storage::{Claim, StoredAnswer};

use super::*;

const TTL: Duration = Duration::from_secs(24 * 60 * 60);
const STALE: Duration = Duration::from_secs(60);

fn answer(id: &str) -> StoredAnswer {
    StoredAnswer {
        status: 201,
        body: format!(r#"{{"id":"{id}"}}"#),
        location: Some(format!("/api/users/{id}")),
        etag: Some(format!(r#""{id}-v1""#)),
    }
}

async fn claim(repo: &DynRepository, scope: &str, key: &str, print: &str, at: i64) -> Claim {
    repo.claim_idempotency_key(scope, key, print, moment(at), TTL, STALE)
        .await
        .expect("claim_idempotency_key")
}

/// New, then in flight, then the stored answer; another fingerprint is refused throughout;
/// other scopes and keys are independent.
pub async fn an_idempotency_key_is_claimed_once_then_replays_its_answer(repo: DynRepository) {
    assert_eq!(claim(&repo, "register", "k1", "a", 0).await, Claim::New);
    assert_eq!(
        claim(&repo, "register", "k1", "a", 1).await,
        Claim::InFlight
    );
    assert_eq!(
        claim(&repo, "register", "k1", "b", 1).await,
        Claim::Mismatch
    );
    repo.complete_idempotency_key("register", "k1", &answer("u1"))
        .await
        .expect("complete");
    assert_eq!(
        claim(&repo, "register", "k1", "a", 2).await,
        Claim::Replay(answer("u1"))
    );
    assert_eq!(
        claim(&repo, "register", "k1", "b", 2).await,
        Claim::Mismatch
    );
    // A completed key is neither completed again nor released.
    repo.complete_idempotency_key("register", "k1", &answer("u2"))
        .await
        .expect("complete again");
    repo.release_idempotency_key("register", "k1")
        .await
        .expect("release");
    assert_eq!(
        claim(&repo, "register", "k1", "a", 3).await,
        Claim::Replay(answer("u1"))
    );
    // Another scope, another key: their own.
    assert_eq!(claim(&repo, "users:x", "k1", "a", 3).await, Claim::New);
    assert_eq!(claim(&repo, "register", "k2", "a", 3).await, Claim::New);
    // An answer without Location or ETag round-trips too.
    let plain = StoredAnswer {
        status: 200,
        body: "{}".to_owned(),
        location: None,
        etag: None,
    };
    repo.complete_idempotency_key("register", "k2", &plain)
        .await
        .expect("complete");
    assert_eq!(
        claim(&repo, "register", "k2", "a", 4).await,
        Claim::Replay(plain)
    );
}

/// A released key is free again, for any request.
pub async fn a_released_idempotency_key_is_free_again(repo: DynRepository) {
    assert_eq!(claim(&repo, "register", "k", "a", 0).await, Claim::New);
    repo.release_idempotency_key("register", "k")
        .await
        .expect("release");
    assert_eq!(claim(&repo, "register", "k", "b", 1).await, Claim::New);
    assert_eq!(claim(&repo, "register", "k", "b", 2).await, Claim::InFlight);
}

/// Past its expiry a key counts as never used; before it, it replays.
pub async fn an_expired_idempotency_key_is_free_again(repo: DynRepository) {
    let day = i64::try_from(TTL.as_secs()).unwrap();
    assert_eq!(claim(&repo, "register", "k", "a", 0).await, Claim::New);
    repo.complete_idempotency_key("register", "k", &answer("u1"))
        .await
        .expect("complete");
    assert_eq!(
        claim(&repo, "register", "k", "a", day - 1).await,
        Claim::Replay(answer("u1"))
    );
    assert_eq!(claim(&repo, "register", "k", "b", day).await, Claim::New);
    repo.complete_idempotency_key("register", "k", &answer("u2"))
        .await
        .expect("complete");
    assert_eq!(
        claim(&repo, "register", "k", "b", day + 1).await,
        Claim::Replay(answer("u2"))
    );
}

/// A claim in flight for `STALE` was abandoned: it may be claimed again (by any request),
/// and the new claim is the one in flight.
pub async fn an_abandoned_idempotency_claim_may_be_claimed_again(repo: DynRepository) {
    let stale = i64::try_from(STALE.as_secs()).unwrap();
    assert_eq!(claim(&repo, "register", "k", "a", 0).await, Claim::New);
    assert_eq!(
        claim(&repo, "register", "k", "a", stale - 1).await,
        Claim::InFlight
    );
    assert_eq!(claim(&repo, "register", "k", "b", stale).await, Claim::New);
    assert_eq!(
        claim(&repo, "register", "k", "b", stale + 1).await,
        Claim::InFlight
    );
    assert_eq!(
        claim(&repo, "register", "k", "a", stale + 1).await,
        Claim::Mismatch
    );
    // A completed key is never abandoned.
    repo.complete_idempotency_key("register", "k", &answer("u1"))
        .await
        .expect("complete");
    assert_eq!(
        claim(&repo, "register", "k", "b", 10 * stale).await,
        Claim::Replay(answer("u1"))
    );
}

/// Through two handles, as two instances: of 20 simultaneous claims of one key, exactly
/// one is new and the others see it in flight.
pub async fn concurrent_claims_of_one_idempotency_key_have_one_winner(
    repo: DynRepository,
    twin: DynRepository,
) {
    let at = now();
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let repo = if i % 2 == 0 {
                repo.clone()
            } else {
                twin.clone()
            };
            tokio::spawn(async move {
                repo.claim_idempotency_key("register", "race", "a", at, TTL, STALE)
                    .await
                    .expect("claim")
            })
        })
        .collect();
    let mut claims = Vec::new();
    for task in tasks {
        claims.push(task.await.expect("task"));
    }
    assert_eq!(claims.iter().filter(|c| **c == Claim::New).count(), 1);
    assert_eq!(
        claims.iter().filter(|c| **c == Claim::InFlight).count(),
        19,
        "{claims:?}"
    );
}
