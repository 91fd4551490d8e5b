//! Two-factor sign-in with TOTP: enrolment, the login's second step, recovery codes,
//! switching off, the login lock and the security notices.

use std::{
    collections::HashSet,
    time::{SystemTime, UNIX_EPOCH},
};

use serde_json::{Value, json};
use totp_rs::{Builder, Secret, Totp};

use crate::helpers::{
    Mailbox, PASSWORD, Reply, Session, TestApp, decoded_body, spawn_app, spawn_app_with,
    start_smtp_server,
};

/// The subjects of the MFA notices (src/mail.rs).
const MFA_ON_MAIL: &str = "Two-factor sign-in was switched on";
const MFA_OFF_MAIL: &str = "Two-factor sign-in was switched off";

// ---------------------------------------------------------------- helpers

/// The authenticator of a base32 secret: SHA-1, 6 digits, 30-second steps.
pub(crate) fn authenticator(secret: &str) -> Totp {
    Builder::new()
        .with_secret(Secret::try_from_base32(secret).expect("a base32 secret"))
        .build()
        .expect("a valid TOTP")
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The code of the step `steps` away from now (0: the current one, 1: the next one).
pub(crate) fn code_at(totp: &Totp, steps: i64) -> String {
    let at = unix_now() as i64 + 30 * steps;
    totp.generate(at as u64).to_string()
}

/// Six digits that are the code of no step near now.
pub(crate) fn wrong_code(totp: &Totp) -> String {
    let near: HashSet<String> = (-3..=3).map(|steps| code_at(totp, steps)).collect();
    (0..)
        .map(|_| format!("{:06}", rand::random_range(0..1_000_000u32)))
        .find(|code| !near.contains(code))
        .unwrap()
}

pub(crate) async fn start_enrolment(app: &TestApp, token: &str, password: Option<&str>) -> Reply {
    let body = match password {
        Some(password) => json!({ "current_password": password }),
        None => json!({}),
    };
    app.post_json("/api/users/me/mfa/totp", &body, Some(token))
        .await
}

pub(crate) async fn confirm(app: &TestApp, token: &str, code: &str) -> Reply {
    app.post_json(
        "/api/users/me/mfa/totp/confirm",
        &json!({ "code": code }),
        Some(token),
    )
    .await
}

pub(crate) async fn login_mfa(app: &TestApp, mfa_token: &str, code: &str) -> Reply {
    app.post_json(
        "/api/auth/login/mfa",
        &json!({"mfa_token": mfa_token, "code": code}),
        None,
    )
    .await
}

async fn regenerate(app: &TestApp, token: &str, password: Option<&str>) -> Reply {
    let body = match password {
        Some(password) => json!({ "current_password": password }),
        None => json!({}),
    };
    app.post_json("/api/users/me/mfa/recovery-codes", &body, Some(token))
        .await
}

async fn disable(app: &TestApp, token: &str, password: Option<&str>) -> Reply {
    let body = match password {
        Some(password) => json!({ "current_password": password }),
        None => json!({}),
    };
    app.post_json("/api/users/me/mfa/disable", &body, Some(token))
        .await
}

async fn admin_reset(app: &TestApp, id: &str, token: &str) -> Reply {
    Reply::from(
        app.client
            .delete(app.url(&format!("/api/users/{id}/mfa")))
            .bearer_auth(token)
            .send()
            .await
            .expect("the request is sent"),
    )
    .await
}

/// A user with MFA on: the authenticator and the recovery codes.
pub(crate) struct Enrolled {
    pub secret: String,
    pub totp: Totp,
    pub recovery_codes: Vec<String>,
}

/// Switches MFA on for a signed-in user; the current step is spent by the confirmation.
pub(crate) async fn enable_mfa(app: &TestApp, session: &Session) -> Enrolled {
    enable_mfa_at(app, session, 0).await
}

/// Switches MFA on, confirming with the code of the step `steps` away from now.
async fn enable_mfa_at(app: &TestApp, session: &Session, steps: i64) -> Enrolled {
    let started = start_enrolment(app, &session.access_token, Some(&session.password)).await;
    started.assert_status(200);
    let secret = started.json()["secret"].as_str().unwrap().to_owned();
    let totp = authenticator(&secret);
    let confirmed = confirm(app, &session.access_token, &code_at(&totp, steps)).await;
    confirmed.assert_status(200);
    let recovery_codes = confirmed.json()["recovery_codes"]
        .as_array()
        .expect("recovery codes")
        .iter()
        .map(|code| code.as_str().unwrap().to_owned())
        .collect();
    Enrolled {
        secret,
        totp,
        recovery_codes,
    }
}

/// The first step of a login with MFA on: asserts its shape, returns the `mfa_token`.
pub(crate) async fn first_step(app: &TestApp, email: &str, password: &str) -> String {
    let reply = app.login_email(email, password).await;
    reply.assert_status(200);
    let body = reply.json();
    assert_eq!(body["mfa_required"], json!(true), "{body}");
    assert_eq!(body["expires_in"], json!(300), "{body}");
    assert!(body.get("access_token").is_none(), "{body}");
    assert!(body.get("refresh_token").is_none(), "{body}");
    body["mfa_token"]
        .as_str()
        .filter(|token| !token.is_empty())
        .unwrap_or_else(|| panic!("no mfa_token: {body}"))
        .to_owned()
}

/// Asserts a token pair whose access token works, and returns the access token.
#[track_caller]
fn assert_pair(reply: &Reply) -> String {
    reply.assert_status(200);
    let body = reply.json();
    assert_eq!(body["token_type"], "Bearer", "{body}");
    assert!(body["refresh_token"].is_string(), "{body}");
    body["access_token"].as_str().unwrap().to_owned()
}

// ---------------------------------------------------------------- enrolment

#[tokio::test]
async fn enrolment_needs_the_current_password() {
    let app = spawn_app().await;
    let alice = app.register_and_login("Alice", "alice@example.com").await;
    start_enrolment(&app, &alice.access_token, None)
        .await
        .assert_problem(403);
    start_enrolment(&app, &alice.access_token, Some("wrong password"))
        .await
        .assert_problem(403);
    // Nothing was started.
    confirm(&app, &alice.access_token, "123456")
        .await
        .assert_problem(409);
    // And no token, no enrolment.
    app.post_json(
        "/api/users/me/mfa/totp",
        &json!({ "current_password": PASSWORD }),
        None,
    )
    .await
    .assert_problem(401);
}

#[tokio::test]
async fn enrolment_returns_a_base32_secret_and_an_otpauth_url_for_the_account() {
    let app = spawn_app().await;
    let alice = app.register_and_login("Alice", "alice@example.com").await;
    let reply = start_enrolment(&app, &alice.access_token, Some(PASSWORD)).await;
    reply.assert_status(200);
    let body = reply.json();
    let secret = body["secret"].as_str().unwrap();
    assert!(Secret::try_from_base32(secret).is_ok(), "{secret}");
    assert!(
        secret
            .chars()
            .all(|c| c.is_ascii_uppercase() || ('2'..='7').contains(&c)),
        "{secret}"
    );
    let url = body["otpauth_url"].as_str().unwrap();
    assert!(
        url.starts_with("otpauth://totp/user-service:alice%40example.com?"),
        "{url}"
    );
    let query = url.split_once('?').unwrap().1;
    let params: Vec<&str> = query.split('&').collect();
    assert!(
        params.contains(&format!("secret={secret}").as_str()),
        "{url}"
    );
    assert!(params.contains(&"issuer=user-service"), "{url}");
    // Not on until confirmed.
    let me = app.me(&alice.access_token).await;
    assert_eq!(me.json()["mfa_enabled"], json!(false));
    app.login_email("alice@example.com", PASSWORD)
        .await
        .assert_status(200);
}

#[tokio::test]
async fn a_wrong_confirm_code_is_422_on_code_and_mfa_stays_off() {
    let app = spawn_app().await;
    let alice = app.register_and_login("Alice", "alice@example.com").await;
    let started = start_enrolment(&app, &alice.access_token, Some(PASSWORD)).await;
    let totp = authenticator(started.json()["secret"].as_str().unwrap());
    let body = confirm(&app, &alice.access_token, &wrong_code(&totp))
        .await
        .assert_invalid_fields(&["code"]);
    assert_eq!(body["errors"][0]["field"], "code");
    let me = app.me(&alice.access_token).await;
    assert_eq!(me.json()["mfa_enabled"], json!(false));
    // The enrolment is still pending: the right code confirms it.
    confirm(&app, &alice.access_token, &code_at(&totp, 0))
        .await
        .assert_status(200);
}

#[tokio::test]
async fn confirming_without_starting_is_409() {
    let app = spawn_app().await;
    let alice = app.register_and_login("Alice", "alice@example.com").await;
    confirm(&app, &alice.access_token, "123456")
        .await
        .assert_problem(409);
}

#[tokio::test]
async fn starting_again_before_confirming_replaces_the_secret() {
    let app = spawn_app().await;
    let alice = app.register_and_login("Alice", "alice@example.com").await;
    let first = start_enrolment(&app, &alice.access_token, Some(PASSWORD)).await;
    let old = authenticator(first.json()["secret"].as_str().unwrap());
    let second = start_enrolment(&app, &alice.access_token, Some(PASSWORD)).await;
    second.assert_status(200);
    let new_secret = second.json()["secret"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, first.json()["secret"].as_str().unwrap());
    let new = authenticator(&new_secret);
    // The old secret's code is refused (unless, by a one-in-a-million chance, it is also
    // the new one's).
    let old_code = code_at(&old, 0);
    let new_codes: HashSet<String> = (-1..=1).map(|steps| code_at(&new, steps)).collect();
    if !new_codes.contains(&old_code) {
        confirm(&app, &alice.access_token, &old_code)
            .await
            .assert_invalid_fields(&["code"]);
    }
    confirm(&app, &alice.access_token, &code_at(&new, 0))
        .await
        .assert_status(200);
}

#[tokio::test]
async fn confirming_switches_mfa_on_with_ten_recovery_codes() {
    let app = spawn_app().await;
    let alice = app.register_and_login("Alice", "alice@example.com").await;
    let enrolled = enable_mfa(&app, &alice).await;
    assert_eq!(enrolled.recovery_codes.len(), 10);
    let distinct: HashSet<&String> = enrolled.recovery_codes.iter().collect();
    assert_eq!(distinct.len(), 10, "{:?}", enrolled.recovery_codes);
    assert!(enrolled.recovery_codes.iter().all(|code| !code.is_empty()));
    let me = app.me(&alice.access_token).await;
    me.assert_status(200);
    assert_eq!(me.json()["mfa_enabled"], json!(true));
    // The secret is not shown again anywhere the user is.
    assert!(!me.text.contains(&enrolled.secret));
    let admin = app.admin_token().await;
    let seen = app.get_user(&alice.id, &admin).await;
    assert_eq!(seen.json()["mfa_enabled"], json!(true));
    assert!(!seen.text.contains(&enrolled.secret));
}

#[tokio::test]
async fn starting_or_confirming_while_mfa_is_on_is_409() {
    let app = spawn_app().await;
    let alice = app.register_and_login("Alice", "alice@example.com").await;
    let enrolled = enable_mfa(&app, &alice).await;
    start_enrolment(&app, &alice.access_token, Some(PASSWORD))
        .await
        .assert_problem(409);
    confirm(&app, &alice.access_token, &code_at(&enrolled.totp, 1))
        .await
        .assert_problem(409);
}

// ---------------------------------------------------------------- the login's second step

#[tokio::test]
async fn with_mfa_on_login_asks_for_a_code_and_the_right_one_gives_a_working_pair() {
    let app = spawn_app().await;
    let alice = app.register_and_login("Alice", "alice@example.com").await;
    let enrolled = enable_mfa(&app, &alice).await;
    let mfa_token = first_step(&app, "alice@example.com", PASSWORD).await;
    // The confirmation spent the current step: the next one signs in.
    let reply = login_mfa(&app, &mfa_token, &code_at(&enrolled.totp, 1)).await;
    let access = assert_pair(&reply);
    let me = app.me(&access).await;
    me.assert_status(200);
    assert_eq!(me.json()["id"], json!(alice.id));
    assert_eq!(me.json()["mfa_enabled"], json!(true));
    // The pair refreshes like any other.
    let refresh = reply.json()["refresh_token"].as_str().unwrap().to_owned();
    assert_pair(&app.refresh(&refresh).await);
}

#[tokio::test]
async fn a_login_by_username_asks_for_the_code_too() {
    let app = spawn_app().await;
    app.register_user("Alice", "alice@example.com", Some("alice"))
        .await;
    let alice = app.login_session("alice@example.com", PASSWORD).await;
    let enrolled = enable_mfa(&app, &alice).await;
    let reply = app.login_username("alice", PASSWORD).await;
    reply.assert_status(200);
    let body = reply.json();
    assert_eq!(body["mfa_required"], json!(true), "{body}");
    assert!(body.get("access_token").is_none(), "{body}");
    let mfa_token = body["mfa_token"].as_str().unwrap();
    assert_pair(&login_mfa(&app, mfa_token, &enrolled.recovery_codes[0]).await);
}

#[tokio::test]
async fn the_code_of_the_confirmation_cannot_sign_in() {
    let app = spawn_app().await;
    let alice = app.register_and_login("Alice", "alice@example.com").await;
    let started = start_enrolment(&app, &alice.access_token, Some(PASSWORD)).await;
    let totp = authenticator(started.json()["secret"].as_str().unwrap());
    let code = code_at(&totp, 0);
    confirm(&app, &alice.access_token, &code)
        .await
        .assert_status(200);
    let mfa_token = first_step(&app, "alice@example.com", PASSWORD).await;
    login_mfa(&app, &mfa_token, &code).await.assert_problem(401);
}

#[tokio::test]
async fn a_totp_code_accepted_once_is_refused_after() {
    let app = spawn_app().await;
    let alice = app.register_and_login("Alice", "alice@example.com").await;
    let enrolled = enable_mfa(&app, &alice).await;
    let code = code_at(&enrolled.totp, 1);
    let first = first_step(&app, "alice@example.com", PASSWORD).await;
    assert_pair(&login_mfa(&app, &first, &code).await);
    let second = first_step(&app, "alice@example.com", PASSWORD).await;
    login_mfa(&app, &second, &code).await.assert_problem(401);
}

#[tokio::test]
async fn a_recovery_code_signs_in_once() {
    let app = spawn_app().await;
    let alice = app.register_and_login("Alice", "alice@example.com").await;
    let enrolled = enable_mfa(&app, &alice).await;
    let code = &enrolled.recovery_codes[3];
    let first = first_step(&app, "alice@example.com", PASSWORD).await;
    let access = assert_pair(&login_mfa(&app, &first, code).await);
    app.me(&access).await.assert_status(200);
    let second = first_step(&app, "alice@example.com", PASSWORD).await;
    login_mfa(&app, &second, code).await.assert_problem(401);
    // Another one of the set still works.
    let third = first_step(&app, "alice@example.com", PASSWORD).await;
    assert_pair(&login_mfa(&app, &third, &enrolled.recovery_codes[4]).await);
}

#[tokio::test]
async fn a_wrong_code_is_401_and_the_fifth_voids_the_mfa_token() {
    let app = spawn_app().await;
    let alice = app.register_and_login("Alice", "alice@example.com").await;
    let enrolled = enable_mfa(&app, &alice).await;
    let mfa_token = first_step(&app, "alice@example.com", PASSWORD).await;
    let wrong = wrong_code(&enrolled.totp);
    for _ in 0..5 {
        let body = login_mfa(&app, &mfa_token, &wrong)
            .await
            .assert_problem(401);
        // A wrong code: another may do.
        assert!(
            !body["type"]
                .as_str()
                .unwrap()
                .ends_with("mfa-token-invalid"),
            "{body}"
        );
    }
    // Void now: even the right code is refused, as a login to start again.
    let right = code_at(&enrolled.totp, 1);
    let body = login_mfa(&app, &mfa_token, &right)
        .await
        .assert_problem(401);
    assert_eq!(
        body["type"], "tag:user-service,2026:problems/mfa-token-invalid",
        "{body}"
    );
    login_mfa(&app, &mfa_token, &enrolled.recovery_codes[0])
        .await
        .assert_problem(401);
    // A new login is not affected, and the code was not spent by the voided attempt.
    let fresh = first_step(&app, "alice@example.com", PASSWORD).await;
    assert_pair(&login_mfa(&app, &fresh, &right).await);
}

#[tokio::test]
async fn four_wrong_codes_leave_the_mfa_token_usable() {
    let app = spawn_app().await;
    let alice = app.register_and_login("Alice", "alice@example.com").await;
    let enrolled = enable_mfa(&app, &alice).await;
    let mfa_token = first_step(&app, "alice@example.com", PASSWORD).await;
    let wrong = wrong_code(&enrolled.totp);
    for _ in 0..4 {
        login_mfa(&app, &mfa_token, &wrong)
            .await
            .assert_problem(401);
    }
    assert_pair(&login_mfa(&app, &mfa_token, &code_at(&enrolled.totp, 1)).await);
}

#[tokio::test]
async fn an_mfa_token_works_once() {
    let app = spawn_app().await;
    let alice = app.register_and_login("Alice", "alice@example.com").await;
    let enrolled = enable_mfa(&app, &alice).await;
    let mfa_token = first_step(&app, "alice@example.com", PASSWORD).await;
    assert_pair(&login_mfa(&app, &mfa_token, &enrolled.recovery_codes[0]).await);
    login_mfa(&app, &mfa_token, &enrolled.recovery_codes[1])
        .await
        .assert_problem(401);
    // And the recovery code was not spent by the refused attempt.
    let fresh = first_step(&app, "alice@example.com", PASSWORD).await;
    assert_pair(&login_mfa(&app, &fresh, &enrolled.recovery_codes[1]).await);
}

#[tokio::test]
async fn an_unknown_mfa_token_is_401_and_a_wrong_password_never_reaches_the_second_step() {
    let app = spawn_app().await;
    let alice = app.register_and_login("Alice", "alice@example.com").await;
    let enrolled = enable_mfa(&app, &alice).await;
    login_mfa(&app, "no-such-token", &code_at(&enrolled.totp, 1))
        .await
        .assert_problem(401);
    app.login_email("alice@example.com", "wrong password")
        .await
        .assert_problem(401);
    // Missing fields are a validation error, not a failed login.
    app.post_json("/api/auth/login/mfa", &json!({}), None)
        .await
        .assert_invalid_fields(&["mfa_token", "code"]);
}

// ---------------------------------------------------------------- recovery codes, switching off

#[tokio::test]
async fn regenerating_recovery_codes_needs_the_password_and_voids_the_old_set() {
    let app = spawn_app().await;
    let alice = app.register_and_login("Alice", "alice@example.com").await;
    let enrolled = enable_mfa(&app, &alice).await;
    regenerate(&app, &alice.access_token, None)
        .await
        .assert_problem(403);
    regenerate(&app, &alice.access_token, Some("wrong password"))
        .await
        .assert_problem(403);
    let reply = regenerate(&app, &alice.access_token, Some(PASSWORD)).await;
    reply.assert_status(200);
    let body = reply.json();
    let new_codes: Vec<String> = body["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|code| code.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(new_codes.len(), 10, "{body}");
    assert!(
        new_codes
            .iter()
            .all(|code| !enrolled.recovery_codes.contains(code))
    );
    // The old set is refused, the new set works.
    let mfa_token = first_step(&app, "alice@example.com", PASSWORD).await;
    login_mfa(&app, &mfa_token, &enrolled.recovery_codes[0])
        .await
        .assert_problem(401);
    assert_pair(&login_mfa(&app, &mfa_token, &new_codes[0]).await);
}

#[tokio::test]
async fn regenerating_recovery_codes_with_mfa_off_is_409() {
    let app = spawn_app().await;
    let alice = app.register_and_login("Alice", "alice@example.com").await;
    regenerate(&app, &alice.access_token, Some(PASSWORD))
        .await
        .assert_problem(409);
}

#[tokio::test]
async fn disabling_with_the_password_makes_login_one_step_again() {
    let app = spawn_app().await;
    let alice = app.register_and_login("Alice", "alice@example.com").await;
    enable_mfa(&app, &alice).await;
    disable(&app, &alice.access_token, None)
        .await
        .assert_problem(403);
    disable(&app, &alice.access_token, Some("wrong password"))
        .await
        .assert_problem(403);
    let me = app.me(&alice.access_token).await;
    assert_eq!(me.json()["mfa_enabled"], json!(true));
    disable(&app, &alice.access_token, Some(PASSWORD))
        .await
        .assert_status(204);
    let me = app.me(&alice.access_token).await;
    assert_eq!(me.json()["mfa_enabled"], json!(false));
    assert_pair(&app.login_email("alice@example.com", PASSWORD).await);
    // Off already: 409.
    disable(&app, &alice.access_token, Some(PASSWORD))
        .await
        .assert_problem(409);
    // And it can be switched on again, with a new secret. (The code of the next step:
    // see `switching_mfa_off_and_on_again_accepts_the_new_secrets_current_code`.)
    enable_mfa_at(&app, &alice, 1).await;
    first_step(&app, "alice@example.com", PASSWORD).await;
}

/// A new secret's current code was never accepted before: switching MFA off and on again
/// within a minute must not refuse it as "not the current code" (API.md: a wrong confirm
/// code is 422; no replay is about a code accepted once).
#[tokio::test]
async fn switching_mfa_off_and_on_again_accepts_the_new_secrets_current_code() {
    let app = spawn_app().await;
    let alice = app.register_and_login("Alice", "alice@example.com").await;
    // Confirmed with the next step's code (accepted: the window is one step either way).
    enable_mfa_at(&app, &alice, 1).await;
    disable(&app, &alice.access_token, Some(PASSWORD))
        .await
        .assert_status(204);
    let started = start_enrolment(&app, &alice.access_token, Some(PASSWORD)).await;
    started.assert_status(200);
    let totp = authenticator(started.json()["secret"].as_str().unwrap());
    confirm(&app, &alice.access_token, &code_at(&totp, 0))
        .await
        .assert_status(200);
}

#[tokio::test]
async fn an_admin_switches_a_users_mfa_off() {
    let app = spawn_app().await;
    let alice = app.register_and_login("Alice", "alice@example.com").await;
    let bob = app.register_and_login("Bob", "bob@example.com").await;
    enable_mfa(&app, &alice).await;
    // Not for a non-admin, not even for their own account.
    admin_reset(&app, &alice.id, &bob.access_token)
        .await
        .assert_problem(403);
    admin_reset(&app, &alice.id, &alice.access_token)
        .await
        .assert_problem(403);
    first_step(&app, "alice@example.com", PASSWORD).await;
    let admin = app.admin_token().await;
    admin_reset(&app, "0123456789abcdef01234567", &admin)
        .await
        .assert_problem(404);
    admin_reset(&app, "not-an-id", &admin)
        .await
        .assert_problem(404);
    admin_reset(&app, &alice.id, &admin)
        .await
        .assert_status(204);
    let seen = app.get_user(&alice.id, &admin).await;
    assert_eq!(seen.json()["mfa_enabled"], json!(false));
    assert_pair(&app.login_email("alice@example.com", PASSWORD).await);
}

// ---------------------------------------------------------------- the login lock

#[tokio::test]
async fn wrong_mfa_codes_count_toward_the_login_lock() {
    let app = spawn_app_with(&[("LOCKOUT_THRESHOLD", "3"), ("LOCKOUT_SECS", "600")]).await;
    let alice = app.register_and_login("Alice", "alice@example.com").await;
    let enrolled = enable_mfa(&app, &alice).await;
    let admin = app.admin_token().await;
    // The right password, many times over, is no failure: each first step is taken back.
    for _ in 0..5 {
        first_step(&app, "alice@example.com", PASSWORD).await;
    }
    // Three wrong codes are three failed logins: the third locks, and the user shows it.
    let mfa_token = first_step(&app, "alice@example.com", PASSWORD).await;
    let wrong = wrong_code(&enrolled.totp);
    for _ in 0..3 {
        login_mfa(&app, &mfa_token, &wrong)
            .await
            .assert_problem(401);
    }
    let user = app.get_user(&alice.id, &admin).await;
    user.assert_status(200);
    assert!(user.json()["locked_until"].is_string(), "{}", user.text);
    let locked = login_mfa(&app, &mfa_token, &wrong).await;
    let problem = locked.assert_problem(429);
    assert!(
        problem["type"].as_str().unwrap().ends_with("login-locked"),
        "{problem}"
    );
    let retry_after: u64 = locked.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=600).contains(&retry_after), "{retry_after}");
    // Locked: neither the right code nor the right password helps.
    let reply = login_mfa(&app, &mfa_token, &code_at(&enrolled.totp, 1)).await;
    assert!(matches!(reply.status.as_u16(), 401 | 429), "{}", reply.text);
    let reply = app.login_email("alice@example.com", PASSWORD).await;
    reply.assert_problem(429);
    assert!(reply.header("retry-after").is_some());
}

#[tokio::test]
async fn completed_mfa_logins_reset_the_count() {
    let app = spawn_app_with(&[("LOCKOUT_THRESHOLD", "3"), ("LOCKOUT_SECS", "600")]).await;
    let alice = app.register_and_login("Alice", "alice@example.com").await;
    let enrolled = enable_mfa(&app, &alice).await;
    for code in &enrolled.recovery_codes[..5] {
        let mfa_token = first_step(&app, "alice@example.com", PASSWORD).await;
        assert_pair(&login_mfa(&app, &mfa_token, code).await);
    }
}

// ---------------------------------------------------------------- concurrency

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_logins_racing_with_the_same_totp_code_let_exactly_one_in() {
    let app = spawn_app().await;
    let alice = app.register_and_login("Alice", "alice@example.com").await;
    let enrolled = enable_mfa(&app, &alice).await;
    let first = first_step(&app, "alice@example.com", PASSWORD).await;
    let second = first_step(&app, "alice@example.com", PASSWORD).await;
    let code = code_at(&enrolled.totp, 1);
    let (a, b) = tokio::join!(
        login_mfa(&app, &first, &code),
        login_mfa(&app, &second, &code)
    );
    let mut statuses = [a.status.as_u16(), b.status.as_u16()];
    statuses.sort();
    assert_eq!(statuses, [200, 401], "{} / {}", a.text, b.text);
    let winner = if a.status == 200 { &a } else { &b };
    app.me(&assert_pair(winner)).await.assert_status(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_recovery_code_raced_by_several_logins_lets_exactly_one_in() {
    let app = spawn_app().await;
    let alice = app.register_and_login("Alice", "alice@example.com").await;
    let enrolled = enable_mfa(&app, &alice).await;
    let mut tokens = Vec::new();
    for _ in 0..4 {
        tokens.push(first_step(&app, "alice@example.com", PASSWORD).await);
    }
    let code = &enrolled.recovery_codes[0];
    let replies =
        futures_util::future::join_all(tokens.iter().map(|token| login_mfa(&app, token, code)))
            .await;
    let mut statuses: Vec<u16> = replies.iter().map(|r| r.status.as_u16()).collect();
    statuses.sort();
    assert_eq!(statuses, [200, 401, 401, 401]);
}

// ---------------------------------------------------------------- notices

async fn app_with_smtp() -> (TestApp, Mailbox) {
    let (port, mailbox) = start_smtp_server();
    let url = format!("smtp://127.0.0.1:{port}");
    let app = spawn_app_with(&[("SMTP_URL", url.as_str())]).await;
    (app, mailbox)
}

fn recipient_is(mail: &str, address: &str) -> bool {
    mail.lines()
        .any(|line| line.to_ascii_lowercase().starts_with("to:") && line.contains(address))
}

#[tokio::test]
async fn switching_mfa_on_and_off_mails_a_notice_without_secrets() {
    let (app, mailbox) = app_with_smtp().await;
    let alice = app.register_and_login("Alice", "alice@example.com").await;
    let enrolled = enable_mfa(&app, &alice).await;
    let on = mailbox.wait_for(MFA_ON_MAIL, 1).await;
    assert!(recipient_is(&on, "alice@example.com"), "{on}");
    let body = decoded_body(&on);
    assert!(!body.contains(&enrolled.secret), "{body}");
    for code in &enrolled.recovery_codes {
        assert!(!body.contains(code.as_str()), "{body}");
    }
    disable(&app, &alice.access_token, Some(PASSWORD))
        .await
        .assert_status(204);
    let off = mailbox.wait_for(MFA_OFF_MAIL, 1).await;
    assert!(recipient_is(&off, "alice@example.com"), "{off}");
    // An admin's reset tells the user too. (Re-enrolled with the next step's code: see
    // `switching_mfa_off_and_on_again_accepts_the_new_secrets_current_code`.)
    enable_mfa_at(&app, &alice, 1).await;
    mailbox.wait_for(MFA_ON_MAIL, 2).await;
    let admin = app.admin_token().await;
    admin_reset(&app, &alice.id, &admin)
        .await
        .assert_status(204);
    let off = mailbox.wait_for(MFA_OFF_MAIL, 2).await;
    assert!(recipient_is(&off, "alice@example.com"), "{off}");
    // A reset of a user whose MFA is off already sends nothing more.
    admin_reset(&app, &alice.id, &admin)
        .await
        .assert_status(204);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(mailbox.of_kind(MFA_OFF_MAIL).len(), 2);
}

/// The secret, once confirmed, appears in no later response.
#[tokio::test]
async fn the_secret_is_not_shown_after_enrolment() {
    let app = spawn_app().await;
    let alice = app.register_and_login("Alice", "alice@example.com").await;
    let enrolled = enable_mfa(&app, &alice).await;
    let admin = app.admin_token().await;
    let replies: Vec<Value> = vec![
        app.me(&alice.access_token).await.json(),
        app.list("", &admin).await.json(),
        app.get("/api/users/me/sessions", Some(&alice.access_token))
            .await
            .json(),
    ];
    for reply in replies {
        let text = reply.to_string();
        assert!(!text.contains(&enrolled.secret), "{text}");
    }
}
