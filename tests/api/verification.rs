//! Email verification, security notices and the mail throttle, with mail delivered to an
//! in-process SMTP server.

use serde_json::{Value, json};

use crate::helpers::{
    EMAIL_NOTICE, Mailbox, PASSWORD, PASSWORD_NOTICE, RESET_MAIL, TestApp, VERIFICATION_MAIL,
    decoded_body, spawn_app_with, start_smtp_server, verification_token_from_mail,
};

async fn app_with_smtp(extra: &[(&str, &str)]) -> (TestApp, Mailbox) {
    let (port, mailbox) = start_smtp_server();
    let url = format!("smtp://127.0.0.1:{port}");
    let mut vars = vec![("SMTP_URL", url.as_str())];
    vars.extend_from_slice(extra);
    let app = spawn_app_with(&vars).await;
    (app, mailbox)
}

async fn verify(app: &TestApp, token: &str) -> crate::helpers::Reply {
    app.post_json("/api/auth/verify-email", &json!({"token": token}), None)
        .await
}

async fn resend(app: &TestApp, email: &str) -> crate::helpers::Reply {
    app.post_json(
        "/api/auth/resend-verification",
        &json!({ "email": email }),
        None,
    )
    .await
}

fn recipient_is(mail: &str, address: &str) -> bool {
    mail.lines()
        .any(|line| line.to_ascii_lowercase().starts_with("to:") && line.contains(address))
}

#[tokio::test]
async fn registration_mails_a_link_that_verifies_the_address_once() {
    let (app, mailbox) = app_with_smtp(&[]).await;
    let user = app.register_user("Alice", "alice@example.com", None).await;
    assert_eq!(user["email_verified"], false);
    let mail = mailbox.wait_for(VERIFICATION_MAIL, 1).await;
    assert!(recipient_is(&mail, "alice@example.com"), "{mail}");
    let token = verification_token_from_mail(&mail);
    let verified = verify(&app, &token).await;
    verified.assert_status(200);
    assert_eq!(verified.json()["email_verified"], true);
    assert_eq!(verified.json()["id"], user["id"]);
    // A link works once; an unknown one never.
    verify(&app, &token).await.assert_problem(401);
    verify(&app, "no-such-token").await.assert_problem(401);
    app.post_json("/api/auth/verify-email", &json!({}), None)
        .await
        .assert_invalid_fields(&["token"]);
}

#[tokio::test]
async fn resending_voids_the_earlier_link_and_answers_alike_for_anyone() {
    let (app, mailbox) = app_with_smtp(&[]).await;
    app.register_user("Alice", "alice@example.com", None).await;
    let first = verification_token_from_mail(&mailbox.wait_for(VERIFICATION_MAIL, 1).await);
    let known = resend(&app, "alice@example.com").await;
    let unknown = resend(&app, "nobody@example.com").await;
    known.assert_status(202);
    unknown.assert_status(202);
    assert_eq!(known.text, unknown.text);
    let second = verification_token_from_mail(&mailbox.wait_for(VERIFICATION_MAIL, 2).await);
    verify(&app, &first).await.assert_problem(401);
    verify(&app, &second).await.assert_status(200);
    // Verified: a resend mails nothing more.
    resend(&app, "alice@example.com").await.assert_status(202);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(mailbox.of_kind(VERIFICATION_MAIL).len(), 2);
}

#[tokio::test]
async fn with_require_verified_email_an_unverified_user_gets_403_after_the_right_password() {
    let (app, mailbox) = app_with_smtp(&[("REQUIRE_VERIFIED_EMAIL", "true")]).await;
    app.register_user("Alice", "alice@example.com", None).await;
    let problem = app
        .login_email("alice@example.com", PASSWORD)
        .await
        .assert_problem(403);
    assert!(
        problem["type"]
            .as_str()
            .unwrap()
            .ends_with("email-not-verified"),
        "{problem}"
    );
    // A wrong password is still the plain 401.
    app.login_email("alice@example.com", "a wrong password")
        .await
        .assert_problem(401);
    let token = verification_token_from_mail(&mailbox.wait_for(VERIFICATION_MAIL, 1).await);
    verify(&app, &token).await.assert_status(200);
    app.login_email("alice@example.com", PASSWORD)
        .await
        .assert_status(200);
}

#[tokio::test]
async fn a_new_email_needs_the_current_password_is_unverified_and_both_addresses_hear_of_it() {
    let (app, mailbox) = app_with_smtp(&[]).await;
    let alice = app.register_and_login("Alice", "alice@example.com").await;
    let token = verification_token_from_mail(&mailbox.wait_for(VERIFICATION_MAIL, 1).await);
    verify(&app, &token).await.assert_status(200);

    app.patch(
        &alice.id,
        &json!({"email": "new@example.com"}),
        &alice.access_token,
    )
    .await
    .assert_problem(403);
    let changed = app
        .patch(
            &alice.id,
            &json!({"email": "new@example.com", "current_password": PASSWORD}),
            &alice.access_token,
        )
        .await;
    changed.assert_status(200);
    assert_eq!(changed.json()["email_verified"], false);
    // A link to the new address, a notice without any link to the old one.
    let link = mailbox.wait_for(VERIFICATION_MAIL, 2).await;
    assert!(recipient_is(&link, "new@example.com"), "{link}");
    let notice = mailbox.wait_for(EMAIL_NOTICE, 1).await;
    assert!(recipient_is(&notice, "alice@example.com"), "{notice}");
    let body = decoded_body(&notice);
    assert!(!body.contains("http") && !body.contains("token"), "{body}");
    verify(&app, &verification_token_from_mail(&link))
        .await
        .assert_status(200);
}

#[tokio::test]
async fn a_password_change_by_anyone_sends_a_notice_without_a_link() {
    let (app, mailbox) = app_with_smtp(&[]).await;
    let alice = app.register_and_login("Alice", "alice@example.com").await;
    app.patch(
        &alice.id,
        &json!({"password": "a second password", "current_password": PASSWORD}),
        &alice.access_token,
    )
    .await
    .assert_status(200);
    let admin = app.admin_token().await;
    app.patch(&alice.id, &json!({"password": "a third password"}), &admin)
        .await
        .assert_status(200);
    for n in [1, 2] {
        let notice = mailbox.wait_for(PASSWORD_NOTICE, n).await;
        assert!(recipient_is(&notice, "alice@example.com"), "{notice}");
        let body = decoded_body(&notice);
        assert!(
            !body.contains("http") && !body.contains("password\":"),
            "{body}"
        );
    }
}

#[tokio::test]
async fn only_admins_set_email_verified_and_the_bootstrap_admin_is_verified() {
    let (app, mailbox) = app_with_smtp(&[]).await;
    let admin = app.admin_token().await;
    assert_eq!(app.me(&admin).await.json()["email_verified"], true);
    let created = app
        .create_user(
            &json!({"name": "Bob", "email": "bob@example.com", "password": PASSWORD,
                "email_verified": true}),
            &admin,
        )
        .await;
    created.assert_status(201);
    assert_eq!(created.json()["email_verified"], true);
    let bob = app.login_session("bob@example.com", PASSWORD).await;
    app.patch(
        &bob.id,
        &json!({"email_verified": false}),
        &bob.access_token,
    )
    .await
    .assert_problem(403);
    let unverified = app
        .patch(&bob.id, &json!({"email_verified": false}), &admin)
        .await;
    unverified.assert_status(200);
    assert_eq!(unverified.json()["email_verified"], false);
    // An admin changing the address may vouch for the new one in the same request.
    let moved = app
        .patch(
            &bob.id,
            &json!({"email": "robert@example.com", "email_verified": true}),
            &admin,
        )
        .await;
    moved.assert_status(200);
    assert_eq!(moved.json()["email_verified"], true);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(mailbox.of_kind(VERIFICATION_MAIL).is_empty());
}

#[tokio::test]
async fn the_throttle_sends_one_mail_of_a_kind_per_address_and_answers_the_same() {
    let (app, mailbox) = app_with_smtp(&[("MAIL_THROTTLE_SECS", "60")]).await;
    app.register_user("Alice", "alice@example.com", None).await;
    let answers: Vec<Value> =
        futures_util::future::join_all((0..3).map(|_| app.forgot_password("alice@example.com")))
            .await
            .into_iter()
            .map(|reply| {
                reply.assert_status(202);
                reply.json()
            })
            .collect();
    assert!(answers.windows(2).all(|pair| pair[0] == pair[1]));
    // The registration's own link counts: a resend right after it sends nothing.
    resend(&app, "alice@example.com").await.assert_status(202);
    mailbox.wait_for(RESET_MAIL, 1).await;
    mailbox.wait_for(VERIFICATION_MAIL, 1).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(mailbox.of_kind(RESET_MAIL).len(), 1);
    assert_eq!(mailbox.of_kind(VERIFICATION_MAIL).len(), 1);
}
