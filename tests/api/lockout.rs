//! The login lock: failed logins in a row lock an account (or a name that is nobody's).

use serde_json::json;

use crate::helpers::{PASSWORD, TestApp, spawn_app_with};

async fn app_with_lockout(threshold: &str) -> TestApp {
    spawn_app_with(&[("LOCKOUT_THRESHOLD", threshold), ("LOCKOUT_SECS", "600")]).await
}

#[tokio::test]
async fn failed_logins_lock_the_account_with_429_login_locked_and_retry_after() {
    let app = app_with_lockout("3").await;
    let user = app
        .register_user("Alice", "alice@example.com", Some("alice"))
        .await;
    for _ in 0..3 {
        app.login_email("alice@example.com", "wrong password")
            .await
            .assert_problem(401);
    }
    // Locked: the right password does not help, by email or by username.
    for reply in [
        app.login_email("alice@example.com", PASSWORD).await,
        app.login_username("alice", PASSWORD).await,
    ] {
        let problem = reply.assert_problem(429);
        assert!(
            problem["type"].as_str().unwrap().ends_with("login-locked"),
            "{problem}"
        );
        let retry_after: u64 = reply.header("retry-after").unwrap().parse().unwrap();
        assert!((590..=600).contains(&retry_after), "{retry_after}");
    }
    // The admin sees until when, and lifts it.
    let admin = app.admin_token().await;
    let id = user["id"].as_str().unwrap();
    let seen = app.get_user(id, &admin).await;
    seen.assert_status(200);
    assert!(seen.json()["locked_until"].is_string(), "{}", seen.json());
    let unlocked = app.unlock(id, &admin).await;
    unlocked.assert_status(200);
    assert_eq!(unlocked.json()["locked_until"], serde_json::Value::Null);
    app.login_email("alice@example.com", PASSWORD)
        .await
        .assert_status(200);
}

#[tokio::test]
async fn an_unknown_address_locks_like_a_known_one() {
    let app = app_with_lockout("3").await;
    for _ in 0..3 {
        app.login_email("nobody@example.com", "wrong password")
            .await
            .assert_problem(401);
    }
    app.login_email("nobody@example.com", "wrong password")
        .await
        .assert_problem(429);
}

#[tokio::test]
async fn only_admins_unlock_and_a_new_user_is_not_locked() {
    let app = app_with_lockout("3").await;
    let user = app.register_user("Bob", "bob@example.com", None).await;
    assert_eq!(user["locked_until"], serde_json::Value::Null);
    let bob = app.login_session("bob@example.com", PASSWORD).await;
    let id = user["id"].as_str().unwrap();
    app.unlock(id, &bob.access_token).await.assert_problem(403);
}

/// Of 20 simultaneous wrong attempts, only the threshold's worth are checked against the
/// password (401); every other one is refused by the lock without a check (429).
#[tokio::test]
async fn a_burst_of_wrong_attempts_is_checked_no_more_than_the_threshold() {
    let app = app_with_lockout("5").await;
    app.register_user("Carol", "carol@example.com", None).await;
    let body = json!({"email": "carol@example.com", "password": "wrong password"});
    let attempts = (0..20).map(|_| app.login(&body));
    let replies = futures_util::future::join_all(attempts).await;
    let mut statuses: Vec<u16> = replies.iter().map(|r| r.status.as_u16()).collect();
    statuses.sort();
    assert_eq!(
        statuses,
        [[401; 5].as_slice(), [429; 15].as_slice()].concat()
    );
}

#[tokio::test]
async fn zero_turns_the_lock_off() {
    let app = app_with_lockout("0").await;
    app.register_user("Dan", "dan@example.com", None).await;
    for _ in 0..15 {
        app.login_email("dan@example.com", "wrong password")
            .await
            .assert_problem(401);
    }
    app.login_email("dan@example.com", PASSWORD)
        .await
        .assert_status(200);
}

#[tokio::test]
async fn the_current_password_a_change_asks_for_counts_toward_the_lock() {
    let app = app_with_lockout("3").await;
    let alice = app.register_and_login("Alice", "alice@example.com").await;
    let admin = app.admin_token().await;
    let change = |current: &'static str| {
        let body = json!({"password": "a brand new password", "current_password": current});
        let (app, token) = (&app, alice.access_token.clone());
        async move { app.patch_json("/api/users/me", &body, Some(&token)).await }
    };
    let enrol = |current: &'static str| {
        let (app, token) = (&app, alice.access_token.clone());
        async move { crate::mfa::start_enrolment(app, &token, Some(current)).await }
    };
    // The right one, again and again, is taken back each time.
    for _ in 0..4 {
        enrol(PASSWORD).await.assert_status(200);
    }
    // A missing one is no guess: refused, not counted.
    for _ in 0..4 {
        app.patch_json(
            "/api/users/me",
            &json!({"password": "a brand new password"}),
            Some(&alice.access_token),
        )
        .await
        .assert_problem(403);
    }
    // Wrong ones count, wherever they are asked for: the third locks.
    change("not my password").await.assert_problem(403);
    enrol("not my password").await.assert_problem(403);
    enrol(PASSWORD).await.assert_status(200);
    change("still not it").await.assert_problem(403);
    let seen = app.get_user(&alice.id, &admin).await;
    assert!(seen.json()["locked_until"].is_string(), "{}", seen.text);
    // Locked: the right password is not looked at, here or at login.
    for reply in [enrol(PASSWORD).await, change(PASSWORD).await] {
        let problem = reply.assert_problem(429);
        assert!(
            problem["type"].as_str().unwrap().ends_with("login-locked"),
            "{problem}"
        );
        assert!(reply.header("retry-after").is_some());
    }
    app.login_email("alice@example.com", PASSWORD)
        .await
        .assert_problem(429);
}
