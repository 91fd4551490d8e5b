//! What happens at start: the admin from ADMIN_EMAIL, and hashes upgraded to a higher cost.

use crate::helpers::{ADMIN_EMAIL, ADMIN_PASSWORD, PASSWORD, spawn_app_with};

fn sqlite_url(dir: &tempfile::TempDir) -> String {
    format!("sqlite://{}", dir.path().join("users.db").display())
}

#[tokio::test]
async fn the_configured_admin_is_created_once_and_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&dir);
    let first = spawn_app_with(&[("DATABASE_URL", &url)]).await;
    let token = first.admin_token().await;
    first.me(&token).await.assert_status(200);
    assert_eq!(first.me(&token).await.json()["role"], "admin");

    // A restart with another password and name for the same address changes nothing.
    let second = spawn_app_with(&[
        ("DATABASE_URL", &url),
        ("ADMIN_PASSWORD", "a different password"),
        ("ADMIN_NAME", "Someone Else"),
    ])
    .await;
    second
        .login_email(ADMIN_EMAIL, "a different password")
        .await
        .assert_problem(401);
    let reply = second.login_email(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    reply.assert_status(200);
    let me = second
        .me(reply.json()["access_token"].as_str().unwrap())
        .await
        .json();
    assert_eq!(me["name"], "Admin");
    let list = second
        .list("role=admin", reply.json()["access_token"].as_str().unwrap())
        .await
        .json();
    assert_eq!(list["total"], 1);
}

fn stored_hash(dir: &tempfile::TempDir, email: &str) -> String {
    let conn = rusqlite::Connection::open(dir.path().join("users.db")).unwrap();
    conn.query_row(
        "SELECT password_hash FROM users WHERE email = ?1",
        [email],
        |row| row.get(0),
    )
    .unwrap()
}

#[tokio::test]
async fn login_upgrades_a_hash_made_at_a_lower_cost() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&dir);
    let weak = spawn_app_with(&[("DATABASE_URL", &url), ("BCRYPT_COST", "4")]).await;
    weak.register_user("Rehash", "rehash@example.com", None)
        .await;
    assert!(stored_hash(&dir, "rehash@example.com").starts_with("$2b$04$"));
    let before = weak.login_session("rehash@example.com", PASSWORD).await;

    let stronger = spawn_app_with(&[("DATABASE_URL", &url), ("BCRYPT_COST", "5")]).await;
    // A failed login leaves the hash alone; a successful one upgrades it.
    stronger
        .login_email("rehash@example.com", "not the password")
        .await
        .assert_problem(401);
    assert!(stored_hash(&dir, "rehash@example.com").starts_with("$2b$04$"));
    stronger
        .login_email("rehash@example.com", PASSWORD)
        .await
        .assert_status(200);
    assert!(stored_hash(&dir, "rehash@example.com").starts_with("$2b$05$"));
    // The upgrade is no password change: tokens issued before it still work.
    stronger.me(&before.access_token).await.assert_status(200);
    stronger
        .refresh(&before.refresh_token)
        .await
        .assert_status(200);
}
