//! Forgot-password and reset-password, with mail delivered to an in-process SMTP server.

use serde_json::json;

use crate::helpers::{
    Mailbox, PASSWORD, RESET_MAIL, TestApp, reset_token_from_mail, spawn_app, spawn_app_with,
    start_smtp_server,
};

const NEW_PASSWORD: &str = "a brand new password";

async fn app_with_smtp() -> (TestApp, Mailbox) {
    let (port, mailbox) = start_smtp_server();
    let url = format!("smtp://127.0.0.1:{port}");
    let app = spawn_app_with(&[("SMTP_URL", &url)]).await;
    (app, mailbox)
}

#[tokio::test]
async fn forgot_password_returns_202_with_the_same_body_for_known_and_unknown_addresses() {
    let app = spawn_app().await;
    app.register_user("Alice", "alice@example.com", None).await;
    let known = app.forgot_password("alice@example.com").await;
    let unknown = app.forgot_password("nobody@example.com").await;
    known.assert_status(202);
    unknown.assert_status(202);
    assert_eq!(known.text, unknown.text);
    assert_eq!(known.header("content-type"), unknown.header("content-type"));
}

#[tokio::test]
async fn forgot_password_returns_422_for_a_malformed_address() {
    let app = spawn_app().await;
    app.forgot_password("not an address")
        .await
        .assert_invalid_fields(&["email"]);
    app.post_json("/api/auth/forgot-password", &json!({}), None)
        .await
        .assert_invalid_fields(&["email"]);
}

#[tokio::test]
async fn reset_password_with_an_unknown_token_returns_401() {
    let app = spawn_app().await;
    app.reset_password("no-such-token", NEW_PASSWORD)
        .await
        .assert_problem(401);
}

#[tokio::test]
async fn reset_password_returns_422_for_missing_fields() {
    let app = spawn_app().await;
    app.post_json("/api/auth/reset-password", &json!({}), None)
        .await
        .assert_invalid_fields(&["token", "new_password"]);
}

#[tokio::test]
async fn no_mail_is_sent_for_an_unknown_address() {
    let (app, mailbox) = app_with_smtp().await;
    app.forgot_password("nobody@example.com")
        .await
        .assert_status(202);
    // A known address afterwards: its mail is the first and only one.
    app.register_user("Alice", "alice@example.com", None).await;
    app.forgot_password("alice@example.com")
        .await
        .assert_status(202);
    let mail = mailbox.wait_for(RESET_MAIL, 1).await;
    assert!(mail.contains("alice@example.com"), "{mail}");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(mailbox.of_kind(RESET_MAIL).len(), 1);
}

#[tokio::test]
async fn full_password_reset_flow_through_smtp() {
    let (app, mailbox) = app_with_smtp().await;
    app.register_user("Alice", "alice@example.com", None).await;
    let session = app.login_session("alice@example.com", PASSWORD).await;
    let other_session = app.login_session("alice@example.com", PASSWORD).await;

    app.forgot_password("Alice@Example.com")
        .await
        .assert_status(202);
    let mail = mailbox.wait_for(RESET_MAIL, 1).await;
    assert!(
        mail.to_ascii_lowercase().contains("to: alice@example.com")
            || mail.contains("<alice@example.com>"),
        "{mail}"
    );
    let token = reset_token_from_mail(&mail);
    assert!(token.len() >= 43, "reset token too short: {token}");

    // An invalid new password is refused without using the token up.
    app.reset_password(&token, "short")
        .await
        .assert_invalid_fields(&["new_password"]);
    app.reset_password(&token, &"x".repeat(73))
        .await
        .assert_invalid_fields(&["new_password"]);

    let reply = app.reset_password(&token, NEW_PASSWORD).await;
    reply.assert_status(204);
    assert!(reply.text.is_empty());

    // The new password works, the old one does not.
    app.login_email("alice@example.com", NEW_PASSWORD)
        .await
        .assert_status(200);
    app.login_email("alice@example.com", PASSWORD)
        .await
        .assert_problem(401);
    // Every refresh token of the user is revoked, and old access tokens are refused.
    app.refresh(&session.refresh_token)
        .await
        .assert_problem(401);
    app.refresh(&other_session.refresh_token)
        .await
        .assert_problem(401);
    app.me(&session.access_token).await.assert_problem(401);

    // The token works once.
    app.reset_password(&token, "yet another password")
        .await
        .assert_problem(401);
    app.login_email("alice@example.com", NEW_PASSWORD)
        .await
        .assert_status(200);
}

#[tokio::test]
async fn each_reset_mail_carries_a_fresh_working_token() {
    let (app, mailbox) = app_with_smtp().await;
    app.register_user("Alice", "alice@example.com", None).await;
    app.forgot_password("alice@example.com")
        .await
        .assert_status(202);
    let first = reset_token_from_mail(&mailbox.wait_for(RESET_MAIL, 1).await);
    app.forgot_password("alice@example.com")
        .await
        .assert_status(202);
    let second = reset_token_from_mail(&mailbox.wait_for(RESET_MAIL, 2).await);
    assert_ne!(first, second);
    app.reset_password(&second, NEW_PASSWORD)
        .await
        .assert_status(204);
    app.login_email("alice@example.com", NEW_PASSWORD)
        .await
        .assert_status(200);
}

#[tokio::test]
async fn deactivated_user_gets_no_reset_mail() {
    let (app, mailbox) = app_with_smtp().await;
    let user = app.register_user("Alice", "alice@example.com", None).await;
    let admin = app.admin_token().await;
    app.deactivate(user["id"].as_str().unwrap(), &admin)
        .await
        .assert_status(200);
    app.forgot_password("alice@example.com")
        .await
        .assert_status(202);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(mailbox.of_kind(RESET_MAIL).is_empty());
}

#[tokio::test]
async fn a_common_new_password_is_refused_and_the_token_still_works() {
    let (app, mailbox) = app_with_smtp().await;
    app.register_user("Alice", "alice@example.com", None).await;
    app.forgot_password("alice@example.com")
        .await
        .assert_status(202);
    let token = reset_token_from_mail(&mailbox.wait_for(RESET_MAIL, 1).await);
    for refused in ["iloveyou", "ALICE@example.com"] {
        app.reset_password(&token, refused)
            .await
            .assert_invalid_fields(&["new_password"]);
    }
    app.reset_password(&token, NEW_PASSWORD)
        .await
        .assert_status(204);
}

#[tokio::test]
async fn a_reset_link_stops_working_once_the_password_address_or_state_changes() {
    let (app, mailbox) = app_with_smtp().await;
    let user = app.register_user("Alice", "alice@example.com", None).await;
    let id = user["id"].as_str().unwrap();
    let admin = app.admin_token().await;
    let mut mails = 0;
    let mut mailed = async |address: &str| {
        app.forgot_password(address).await.assert_status(202);
        mails += 1;
        reset_token_from_mail(&mailbox.wait_for(RESET_MAIL, mails).await)
    };

    // Alice changes her own account, signed in anew.
    let change = async |email: &str, password: &str, body: serde_json::Value| {
        let alice = app.login_session(email, password).await;
        app.patch_json("/api/users/me", &body, Some(&alice.access_token))
            .await
            .assert_status(200);
    };
    let (email, new_email) = ("alice@example.com", "alice@wonder.land");
    let last_password = "yet another new password";

    // Another change (the name) leaves the link alone.
    let token = mailed(email).await;
    change(email, PASSWORD, json!({"name": "Alice Liddell"})).await;
    app.reset_password(&token, NEW_PASSWORD)
        .await
        .assert_status(204);

    // Her own new password: a link mailed before it is void.
    let token = mailed(email).await;
    let body = json!({"password": last_password, "current_password": NEW_PASSWORD});
    change(email, NEW_PASSWORD, body).await;
    app.reset_password(&token, "the attacker's password")
        .await
        .assert_status(401);

    // Her new address: the link mailed to the old one is void.
    let token = mailed(email).await;
    let body = json!({"email": new_email, "current_password": last_password});
    change(email, last_password, body).await;
    app.reset_password(&token, "the attacker's password")
        .await
        .assert_status(401);

    // Deactivated by an admin: void too, and it stays so once she is active again.
    let token = mailed(new_email).await;
    app.deactivate(id, &admin).await.assert_status(200);
    app.activate(id, &admin).await.assert_status(200);
    app.reset_password(&token, "the attacker's password")
        .await
        .assert_status(401);
    app.login_email(new_email, last_password)
        .await
        .assert_status(200);
}
