//! TOTP multi-factor authentication: enrolment, time steps, recovery codes, and the login
//! challenges that stand between a password and a session.

use user_service::{
    domain::Secret,
    storage::{OneTimeTokenRecord, TotpState},
};

use super::*;

fn secret(raw: &str) -> Secret {
    Secret::new(raw)
}

fn hashes(codes: &[&str]) -> Vec<String> {
    codes.iter().map(|c| (*c).to_owned()).collect()
}

async fn totp(repo: &DynRepository, user_id: UserId) -> TotpState {
    repo.totp_state(&user_id)
        .await
        .expect("totp_state")
        .expect("the user exists")
}

async fn set_pending(repo: &DynRepository, user_id: UserId, pending: &str) -> bool {
    repo.set_pending_totp(&user_id, &secret(pending))
        .await
        .expect("set_pending_totp")
}

async fn enable(
    repo: &DynRepository,
    user_id: UserId,
    pending: &str,
    step: u64,
    codes: &[&str],
    at: OffsetDateTime,
) -> bool {
    repo.enable_totp(&user_id, &secret(pending), step, &hashes(codes), at)
        .await
        .expect("enable_totp")
}

/// Enrols the user: a pending secret, confirmed by a code of `step`.
async fn enrol(repo: &DynRepository, user_id: UserId, key: &str, step: u64, codes: &[&str]) {
    assert!(set_pending(repo, user_id, key).await, "set_pending_totp");
    assert!(
        enable(repo, user_id, key, step, codes, moment(1)).await,
        "enable_totp"
    );
}

async fn claim(repo: &DynRepository, user_id: UserId, step: u64) -> bool {
    repo.claim_totp_step(&user_id, step)
        .await
        .expect("claim_totp_step")
}

async fn use_code(repo: &DynRepository, user_id: UserId, code: &str) -> bool {
    repo.use_recovery_code(&user_id, code)
        .await
        .expect("use_recovery_code")
}

async fn disable(repo: &DynRepository, user_id: UserId, at: OffsetDateTime) -> bool {
    repo.disable_totp(&user_id, at).await.expect("disable_totp")
}

const KEY: &str = "JBSWY3DPEHPK3PXP";
const OTHER_KEY: &str = "KRSXG5CTMVRXEZLU";

// ---------------------------------------------------------------------------------------
// TOTP
// ---------------------------------------------------------------------------------------

pub async fn a_pending_totp_secret_is_replaced_until_mfa_is_on(repo: DynRepository) {
    let user = create(&repo, "Mario", "mario@example.com", None).await;
    assert_eq!(totp(&repo, user.id).await, TotpState::default());
    assert_eq!(
        repo.totp_state(&UserId::generate())
            .await
            .expect("totp_state"),
        None,
        "nobody has no state"
    );

    assert!(set_pending(&repo, user.id, KEY).await);
    assert_eq!(
        totp(&repo, user.id).await,
        TotpState {
            pending: Some(secret(KEY)),
            ..TotpState::default()
        }
    );
    // A second enrolment replaces the first: the first can no longer be confirmed.
    assert!(set_pending(&repo, user.id, OTHER_KEY).await);
    assert_eq!(
        totp(&repo, user.id).await,
        TotpState {
            pending: Some(secret(OTHER_KEY)),
            ..TotpState::default()
        }
    );
    assert!(!enable(&repo, user.id, KEY, 100, &["c"], moment(1)).await);
    assert!(enable(&repo, user.id, OTHER_KEY, 100, &["c"], moment(1)).await);

    // While MFA is on, nothing may be set pending.
    let before = fetch(&repo, &user.id).await;
    assert!(!set_pending(&repo, user.id, KEY).await);
    assert_eq!(
        totp(&repo, user.id).await,
        TotpState {
            secret: Some(secret(OTHER_KEY)),
            pending: None,
            last_step: Some(100),
        }
    );
    assert_eq!(fetch(&repo, &user.id).await, before);
    assert!(
        !repo
            .set_pending_totp(&UserId::generate(), &secret(KEY))
            .await
            .expect("set_pending_totp"),
        "nobody"
    );
}

pub async fn enable_totp_needs_the_pending_secret_and_sets_mfa_enabled_and_updated_at(
    repo: DynRepository,
) {
    let user = create(&repo, "Mario", "mario@example.com", None).await;
    let other = create(&repo, "Luigi", "luigi@example.com", None).await;
    assert!(!user.mfa_enabled);
    assert!(
        !enable(&repo, user.id, KEY, 100, &["c1"], moment(77)).await,
        "nothing pending"
    );
    assert!(set_pending(&repo, user.id, KEY).await);
    assert!(
        !enable(&repo, user.id, OTHER_KEY, 100, &["c1"], moment(77)).await,
        "not the pending secret"
    );
    assert!(
        !enable(&repo, other.id, KEY, 100, &["c1"], moment(77)).await,
        "another user's pending secret"
    );
    // The refusals changed nothing.
    assert_eq!(fetch(&repo, &user.id).await, user);
    assert_eq!(fetch(&repo, &other.id).await, other);
    assert_eq!(
        totp(&repo, user.id).await,
        TotpState {
            pending: Some(secret(KEY)),
            ..TotpState::default()
        }
    );

    assert!(enable(&repo, user.id, KEY, 100, &["c1", "c2"], moment(77)).await);
    let expected = User {
        mfa_enabled: true,
        updated_at: moment(77),
        ..user.clone()
    };
    assert_eq!(fetch(&repo, &user.id).await, expected);
    assert_eq!(
        repo.user_by_email(&user.email).await.expect("by email"),
        Some(expected.clone())
    );
    assert_eq!(
        totp(&repo, user.id).await,
        TotpState {
            secret: Some(secret(KEY)),
            pending: None,
            last_step: Some(100),
        }
    );
    // The recovery codes given are the user's.
    assert!(use_code(&repo, user.id, "c2").await);
    // Once on, it cannot be enabled again.
    assert!(!enable(&repo, user.id, KEY, 200, &["c3"], moment(78)).await);
    assert_eq!(fetch(&repo, &user.id).await, expected);
    assert!(!use_code(&repo, user.id, "c3").await);
    assert_eq!(fetch(&repo, &other.id).await, other);
    assert!(
        !enable(&repo, UserId::generate(), KEY, 100, &[], moment(77)).await,
        "nobody"
    );
}

/// The last accepted step outlives a disable: a code of it, or before, does not confirm a
/// new enrolment either.
pub async fn a_new_secret_starts_its_own_steps_from_its_enrolment(repo: DynRepository) {
    let user = create(&repo, "Mario", "mario@example.com", None).await;
    enrol(&repo, user.id, KEY, 100, &[]).await;
    assert!(claim(&repo, user.id, 105).await);
    assert!(disable(&repo, user.id, moment(2)).await);
    assert_eq!(
        totp(&repo, user.id).await,
        TotpState {
            secret: None,
            pending: None,
            last_step: Some(105),
        },
        "the secrets are forgotten"
    );

    // The old secret's steps say nothing about a new one's codes: its enrolment sets the
    // last step, from which its codes are taken once.
    assert!(set_pending(&repo, user.id, OTHER_KEY).await);
    assert!(enable(&repo, user.id, OTHER_KEY, 104, &[], moment(3)).await);
    assert!(fetch(&repo, &user.id).await.mfa_enabled);
    assert_eq!(totp(&repo, user.id).await.last_step, Some(104));
    assert!(!claim(&repo, user.id, 104).await, "the enrolment's code");
    assert!(claim(&repo, user.id, 105).await);
}

pub async fn claim_totp_step_accepts_only_ever_later_steps_while_mfa_is_on(repo: DynRepository) {
    let user = create(&repo, "Mario", "mario@example.com", None).await;
    let other = create(&repo, "Luigi", "luigi@example.com", None).await;
    assert!(!claim(&repo, user.id, 100).await, "MFA is off");
    assert!(set_pending(&repo, user.id, KEY).await);
    assert!(!claim(&repo, user.id, 100).await, "MFA is only pending");

    enrol(&repo, user.id, KEY, 100, &[]).await;
    enrol(&repo, other.id, KEY, 100, &[]).await;
    assert!(!claim(&repo, user.id, 100).await, "the enrolment's step");
    assert!(!claim(&repo, user.id, 99).await, "an earlier step");
    assert!(claim(&repo, user.id, 101).await);
    assert!(!claim(&repo, user.id, 101).await, "a code is taken once");
    assert!(claim(&repo, user.id, 103).await, "steps may be skipped");
    assert!(!claim(&repo, user.id, 102).await, "never back");
    assert_eq!(totp(&repo, user.id).await.last_step, Some(103));
    // Each user has their own steps.
    assert!(claim(&repo, other.id, 101).await);
    assert_eq!(totp(&repo, other.id).await.last_step, Some(101));

    assert!(disable(&repo, user.id, moment(2)).await);
    assert!(!claim(&repo, user.id, 200).await, "MFA is off again");
    assert!(!claim(&repo, UserId::generate(), 200).await, "nobody");
}

/// Two handles, as two instances: one code presented 20 times at once is taken once.
pub async fn concurrent_claims_of_one_totp_step_have_one_winner(
    repo: DynRepository,
    twin: DynRepository,
) {
    let user = create(&repo, "Mario", "mario@example.com", None).await;
    enrol(&repo, user.id, KEY, 100, &[]).await;
    for step in [101, 102, 110] {
        let tasks: Vec<_> = (0..20)
            .map(|i| {
                let repo = if i % 2 == 0 {
                    repo.clone()
                } else {
                    twin.clone()
                };
                tokio::spawn(async move { repo.claim_totp_step(&user.id, step).await })
            })
            .collect();
        let mut winners = 0;
        for task in tasks {
            winners += usize::from(task.await.expect("task").expect("claim"));
        }
        assert_eq!(winners, 1, "step {step}");
        assert_eq!(totp(&repo, user.id).await.last_step, Some(step));
    }
}

// ---------------------------------------------------------------------------------------
// Recovery codes
// ---------------------------------------------------------------------------------------

async fn holds(repo: &DynRepository, user_id: UserId, code: &str) -> bool {
    repo.holds_recovery_code(&user_id, code)
        .await
        .expect("holds_recovery_code")
}

pub async fn a_recovery_code_is_spent_once_and_only_by_its_user(repo: DynRepository) {
    let user = create(&repo, "Mario", "mario@example.com", None).await;
    let other = create(&repo, "Luigi", "luigi@example.com", None).await;
    enrol(&repo, user.id, KEY, 100, &["x", "y", "z"]).await;
    enrol(&repo, other.id, KEY, 100, &["x", "w"]).await;

    // Looking spends nothing.
    assert!(holds(&repo, user.id, "x").await);
    assert!(holds(&repo, user.id, "x").await);
    assert!(!holds(&repo, user.id, "w").await, "another user's code");
    assert!(!holds(&repo, UserId::generate(), "x").await, "nobody");
    assert!(use_code(&repo, user.id, "x").await);
    assert!(!holds(&repo, user.id, "x").await, "spent");
    assert!(!use_code(&repo, user.id, "x").await, "spent");
    assert!(!use_code(&repo, user.id, "w").await, "another user's code");
    assert!(!use_code(&repo, user.id, "unknown").await);
    assert!(
        use_code(&repo, other.id, "x").await,
        "the same code of another user is theirs to spend"
    );
    assert!(use_code(&repo, user.id, "z").await);
    assert!(use_code(&repo, user.id, "y").await);
    assert!(!use_code(&repo, user.id, "y").await);
    assert!(!use_code(&repo, UserId::generate(), "w").await, "nobody");
    assert!(use_code(&repo, other.id, "w").await);
}

/// Two handles, as two instances: one recovery code presented 20 times at once is spent
/// once.
pub async fn concurrent_uses_of_one_recovery_code_have_one_winner(
    repo: DynRepository,
    twin: DynRepository,
) {
    let user = create(&repo, "Mario", "mario@example.com", None).await;
    enrol(&repo, user.id, KEY, 100, &["contested", "spare"]).await;
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let repo = if i % 2 == 0 {
                repo.clone()
            } else {
                twin.clone()
            };
            tokio::spawn(async move { repo.use_recovery_code(&user.id, "contested").await })
        })
        .collect();
    let mut winners = 0;
    for task in tasks {
        winners += usize::from(task.await.expect("task").expect("use"));
    }
    assert_eq!(winners, 1);
    assert!(
        use_code(&repo, user.id, "spare").await,
        "the other code is left"
    );
}

pub async fn replacing_recovery_codes_voids_the_old_ones(repo: DynRepository) {
    let user = create(&repo, "Mario", "mario@example.com", None).await;
    let replace = |codes: &'static [&'static str]| {
        let repo = repo.clone();
        async move {
            repo.replace_recovery_codes(&user.id, &hashes(codes))
                .await
                .expect("replace_recovery_codes")
        }
    };
    assert!(!replace(&["early"]).await, "MFA is off");
    enrol(&repo, user.id, KEY, 100, &["a", "b"]).await;
    assert!(!use_code(&repo, user.id, "early").await);
    assert!(use_code(&repo, user.id, "a").await);

    let before = fetch(&repo, &user.id).await;
    assert!(replace(&["c", "d"]).await);
    assert!(!use_code(&repo, user.id, "b").await, "an old, unspent code");
    assert!(!use_code(&repo, user.id, "a").await, "an old, spent code");
    assert!(use_code(&repo, user.id, "c").await);
    assert!(!use_code(&repo, user.id, "c").await);
    assert!(use_code(&repo, user.id, "d").await);
    // A new set may hold a code of an old one again.
    assert!(replace(&["a"]).await);
    assert!(use_code(&repo, user.id, "a").await);
    // Replacing codes is no change to the user, nor to the TOTP secret.
    assert_eq!(fetch(&repo, &user.id).await, before);
    assert_eq!(totp(&repo, user.id).await.secret, Some(secret(KEY)));

    assert!(disable(&repo, user.id, moment(2)).await);
    assert!(!replace(&["late"]).await, "MFA is off again");
    assert!(!use_code(&repo, user.id, "late").await);
    assert!(
        !repo
            .replace_recovery_codes(&UserId::generate(), &hashes(&["x"]))
            .await
            .expect("replace_recovery_codes"),
        "nobody"
    );
}

pub async fn disable_totp_forgets_secrets_and_codes_and_is_false_when_off(repo: DynRepository) {
    let user = create(&repo, "Mario", "mario@example.com", None).await;
    let other = create(&repo, "Luigi", "luigi@example.com", None).await;
    // Off, with an enrolment pending: nothing to disable, and nothing changes.
    assert!(set_pending(&repo, user.id, KEY).await);
    assert!(!disable(&repo, user.id, moment(50)).await);
    assert_eq!(fetch(&repo, &user.id).await, user);
    assert_eq!(totp(&repo, user.id).await.pending, Some(secret(KEY)));

    assert!(enable(&repo, user.id, KEY, 100, &["a", "b"], moment(10)).await);
    enrol(&repo, other.id, OTHER_KEY, 100, &["a"]).await;
    let other_before = fetch(&repo, &other.id).await;
    let precise = moment(20)
        .replace_nanosecond(555_666_777)
        .expect("a valid nanosecond");
    assert!(disable(&repo, user.id, precise).await);
    assert_eq!(
        fetch(&repo, &user.id).await,
        User {
            mfa_enabled: false,
            updated_at: truncate_to_millis(precise),
            ..user.clone()
        }
    );
    let state = totp(&repo, user.id).await;
    assert_eq!((state.secret, state.pending), (None, None));
    assert!(!holds(&repo, user.id, "a").await, "the codes are void");
    assert!(!use_code(&repo, user.id, "a").await, "the codes are void");
    assert!(!use_code(&repo, user.id, "b").await);
    assert!(!claim(&repo, user.id, 500).await);

    // A second disable finds it off and changes nothing.
    let off = fetch(&repo, &user.id).await;
    assert!(!disable(&repo, user.id, moment(30)).await);
    assert_eq!(fetch(&repo, &user.id).await, off);
    assert!(
        !disable(&repo, UserId::generate(), moment(30)).await,
        "nobody"
    );

    // The other user keeps theirs.
    assert_eq!(fetch(&repo, &other.id).await, other_before);
    assert_eq!(totp(&repo, other.id).await.secret, Some(secret(OTHER_KEY)));
    assert!(use_code(&repo, other.id, "a").await);

    // A new enrolment starts afresh.
    assert!(set_pending(&repo, user.id, OTHER_KEY).await);
    assert!(enable(&repo, user.id, OTHER_KEY, 200, &["n"], moment(40)).await);
    assert!(!use_code(&repo, user.id, "a").await);
    assert!(use_code(&repo, user.id, "n").await);
}

// ---------------------------------------------------------------------------------------
// MFA challenges
// ---------------------------------------------------------------------------------------

/// A challenge of `user_id` issued at `moment(0)`, live for five minutes.
fn challenge(token_hash: &str, user_id: UserId) -> OneTimeTokenRecord {
    OneTimeTokenRecord {
        token_hash: token_hash.to_owned(),
        user_id,
        created_at: moment(0),
        expires_at: moment(300),
    }
}

async fn attempt(
    repo: &DynRepository,
    token: &str,
    at: OffsetDateTime,
    max_attempts: u32,
) -> Option<UserId> {
    repo.attempt_mfa_challenge(token, at, max_attempts)
        .await
        .expect("attempt_mfa_challenge")
}

async fn consume_challenge(repo: &DynRepository, token: &str, at: OffsetDateTime) -> bool {
    repo.consume_mfa_challenge(token, at)
        .await
        .expect("consume_mfa_challenge")
}

async fn issue(repo: &DynRepository, record: OneTimeTokenRecord) {
    repo.insert_mfa_challenge(record)
        .await
        .expect("insert_mfa_challenge");
}

pub async fn an_mfa_challenge_takes_at_most_max_attempts(repo: DynRepository) {
    let user = create(&repo, "Mario", "mario@example.com", None).await;
    issue(&repo, challenge("limited", user.id)).await;
    issue(&repo, challenge("fresh", user.id)).await;
    for n in 1..=3 {
        assert_eq!(
            attempt(&repo, "limited", moment(10), 3).await,
            Some(user.id),
            "attempt {n}"
        );
    }
    assert_eq!(
        attempt(&repo, "limited", moment(10), 3).await,
        None,
        "out of attempts"
    );
    assert_eq!(
        attempt(&repo, "limited", moment(10), 3).await,
        None,
        "a refused attempt counts for nothing"
    );
    // The limit is the caller's: three attempts so far leave room under a limit of four.
    assert_eq!(
        attempt(&repo, "limited", moment(10), 4).await,
        Some(user.id)
    );
    assert_eq!(attempt(&repo, "limited", moment(10), 4).await, None);
    assert_eq!(
        attempt(&repo, "fresh", moment(10), 3).await,
        Some(user.id),
        "another challenge is its own"
    );
    assert_eq!(attempt(&repo, "unknown", moment(10), 3).await, None);
    assert_eq!(
        attempt(&repo, "fresh", moment(10), 0).await,
        None,
        "no attempts allowed"
    );
}

pub async fn an_mfa_challenge_is_dead_from_its_expires_at(repo: DynRepository) {
    let user = create(&repo, "Mario", "mario@example.com", None).await;
    issue(&repo, challenge("timed", user.id)).await;
    let last = moment(300) - time::Duration::milliseconds(1);
    assert_eq!(
        attempt(&repo, "timed", moment(300), 5).await,
        None,
        "at expires_at"
    );
    assert_eq!(attempt(&repo, "timed", moment(900), 5).await, None, "later");
    assert!(!consume_challenge(&repo, "timed", moment(300)).await);
    assert_eq!(attempt(&repo, "timed", last, 5).await, Some(user.id));
    assert!(consume_challenge(&repo, "timed", last).await);

    // Stored to the millisecond: a deadline with finer digits is cut down to it.
    let precise = OneTimeTokenRecord {
        expires_at: moment(300)
            .replace_nanosecond(999_999_999)
            .expect("a valid nanosecond"),
        ..challenge("precise", user.id)
    };
    issue(&repo, precise).await;
    assert_eq!(
        attempt(
            &repo,
            "precise",
            moment(300) + time::Duration::milliseconds(999),
            5
        )
        .await,
        None
    );
    assert_eq!(
        attempt(
            &repo,
            "precise",
            moment(300) + time::Duration::milliseconds(998),
            5
        )
        .await,
        Some(user.id)
    );
}

pub async fn an_mfa_challenge_is_consumed_once_and_then_not_attemptable(repo: DynRepository) {
    let user = create(&repo, "Mario", "mario@example.com", None).await;
    issue(&repo, challenge("once", user.id)).await;
    issue(&repo, challenge("other", user.id)).await;
    assert_eq!(attempt(&repo, "once", moment(10), 5).await, Some(user.id));
    assert!(consume_challenge(&repo, "once", moment(10)).await);
    assert!(!consume_challenge(&repo, "once", moment(11)).await, "spent");
    assert_eq!(
        attempt(&repo, "once", moment(12), 5).await,
        None,
        "a spent challenge takes no more attempts"
    );
    assert!(!consume_challenge(&repo, "unknown", moment(10)).await);
    // The user's other challenge is untouched.
    assert_eq!(attempt(&repo, "other", moment(12), 5).await, Some(user.id));
    assert!(consume_challenge(&repo, "other", moment(12)).await);
}

/// Two handles, as two instances: of 20 simultaneous consumes of a challenge, one wins.
pub async fn concurrent_consumes_of_an_mfa_challenge_have_one_winner(
    repo: DynRepository,
    twin: DynRepository,
) {
    let user = create(&repo, "Mario", "mario@example.com", None).await;
    issue(&repo, challenge("contested", user.id)).await;
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let repo = if i % 2 == 0 {
                repo.clone()
            } else {
                twin.clone()
            };
            tokio::spawn(async move { repo.consume_mfa_challenge("contested", moment(10)).await })
        })
        .collect();
    let mut winners = 0;
    for task in tasks {
        winners += usize::from(task.await.expect("task").expect("consume"));
    }
    assert_eq!(winners, 1);
    assert_eq!(attempt(&repo, "contested", moment(10), 5).await, None);
}

/// Two handles, as two instances: 20 simultaneous attempts at a challenge allowing five
/// get exactly five through.
pub async fn concurrent_attempts_at_an_mfa_challenge_never_exceed_the_limit(
    repo: DynRepository,
    twin: DynRepository,
) {
    let user = create(&repo, "Mario", "mario@example.com", None).await;
    issue(&repo, challenge("guessed", user.id)).await;
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let repo = if i % 2 == 0 {
                repo.clone()
            } else {
                twin.clone()
            };
            tokio::spawn(async move { repo.attempt_mfa_challenge("guessed", moment(10), 5).await })
        })
        .collect();
    let mut allowed = 0;
    for task in tasks {
        if let Some(id) = task.await.expect("task").expect("attempt") {
            assert_eq!(id, user.id);
            allowed += 1;
        }
    }
    assert_eq!(allowed, 5);
    assert_eq!(attempt(&repo, "guessed", moment(10), 5).await, None);
}
