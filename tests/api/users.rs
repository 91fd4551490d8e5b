//! The users API: reading, updating, deleting, admin rules and listing.

use serde_json::{Value, json};

use crate::helpers::{PASSWORD, Session, TestApp, spawn_app};

const OTHER_PASSWORD: &str = "another fine password";

async fn two_users(app: &TestApp) -> (Session, Session) {
    let alice = app.register_and_login("Alice", "alice@example.com").await;
    let bob = app.register_and_login("Bob", "bob@example.com").await;
    (alice, bob)
}

// ---------------------------------------------------------------- reading

#[tokio::test]
async fn user_can_read_themselves_by_id_and_as_me() {
    let app = spawn_app().await;
    let (alice, _) = two_users(&app).await;
    let by_id = app.get_user(&alice.id, &alice.access_token).await;
    by_id.assert_status(200);
    assert_eq!(by_id.header("cache-control"), Some("no-store"));
    let me = app.me(&alice.access_token).await;
    me.assert_status(200);
    // last_login_at is the same in both; the whole user is.
    assert_eq!(by_id.json(), me.json());
    assert_eq!(me.json()["email"], "alice@example.com");
    assert!(!me.text.contains("password") && !me.text.contains("hash"));
}

#[tokio::test]
async fn user_reading_someone_else_gets_403() {
    let app = spawn_app().await;
    let (alice, bob) = two_users(&app).await;
    app.get_user(&bob.id, &alice.access_token)
        .await
        .assert_problem(403);
}

#[tokio::test]
async fn admin_can_read_anyone() {
    let app = spawn_app().await;
    let (alice, _) = two_users(&app).await;
    let admin = app.admin_token().await;
    let reply = app.get_user(&alice.id, &admin).await;
    reply.assert_status(200);
    assert_eq!(reply.json()["email"], "alice@example.com");
}

#[tokio::test]
async fn malformed_id_returns_404() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    for id in [
        "not-an-id",
        "123",
        "65F0C1E2A4B5C6D7E8F90123",
        "65f0c1e2a4b5c6d7e8f9012z",
    ] {
        app.get_user(id, &admin).await.assert_problem(404);
        app.patch(id, &json!({"name": "X"}), &admin)
            .await
            .assert_problem(404);
        app.delete(id, &admin).await.assert_problem(404);
    }
}

#[tokio::test]
async fn unknown_id_returns_404_for_an_admin() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let id = "65f0c1e2a4b5c6d7e8f90123";
    app.get_user(id, &admin).await.assert_problem(404);
    app.update(id, &json!({"name": "X"}), &admin)
        .await
        .assert_problem(404);
    app.patch(id, &json!({"name": "X"}), &admin)
        .await
        .assert_problem(404);
    app.delete(id, &admin).await.assert_problem(404);
    app.activate(id, &admin).await.assert_problem(404);
    app.deactivate(id, &admin).await.assert_problem(404);
}

#[tokio::test]
async fn users_routes_need_a_token() {
    let app = spawn_app().await;
    let id = "65f0c1e2a4b5c6d7e8f90123";
    for reply in [
        app.get("/api/users", None).await,
        app.get("/api/users/me", None).await,
        app.get(&format!("/api/users/{id}"), None).await,
        app.patch_json("/api/users/me", &json!({"name": "X"}), None)
            .await,
        app.put_json(&format!("/api/users/{id}"), &json!({"name": "X"}), None)
            .await,
        app.post_json(
            "/api/users",
            &json!({"name": "X", "email": "x@example.com", "password": PASSWORD}),
            None,
        )
        .await,
    ] {
        reply.assert_problem(401);
    }
}

// ---------------------------------------------------------------- updating

#[tokio::test]
async fn put_updates_only_the_fields_sent() {
    let app = spawn_app().await;
    app.register_user("Alice", "alice@example.com", Some("alice"))
        .await;
    let alice = app.login_session("alice@example.com", PASSWORD).await;
    let before = app.me(&alice.access_token).await.json();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let reply = app
        .update(
            &alice.id,
            &json!({"name": "Alice Liddell"}),
            &alice.access_token,
        )
        .await;
    reply.assert_status(200);
    let after = reply.json();
    assert_eq!(after["name"], "Alice Liddell");
    for field in ["id", "email", "username", "role", "active", "created_at"] {
        assert_eq!(after[field], before[field], "{field} changed");
    }
    assert_ne!(after["updated_at"], before["updated_at"]);
}

#[tokio::test]
async fn patch_leaves_other_fields_alone() {
    let app = spawn_app().await;
    app.register_user("Alice", "alice@example.com", Some("alice"))
        .await;
    let alice = app.login_session("alice@example.com", PASSWORD).await;
    let before = app.me(&alice.access_token).await.json();
    let reply = app
        .patch(
            &alice.id,
            &json!({"email": "  Alice@Wonder.land ", "current_password": PASSWORD}),
            &alice.access_token,
        )
        .await;
    reply.assert_status(200);
    let after = reply.json();
    assert_eq!(after["email"], "alice@wonder.land");
    for field in ["id", "name", "username", "role", "active", "created_at"] {
        assert_eq!(after[field], before[field], "{field} changed");
    }
    // The new address is the login now; the password is unchanged.
    app.login_email("alice@wonder.land", PASSWORD)
        .await
        .assert_status(200);
    app.login_email("alice@example.com", PASSWORD)
        .await
        .assert_problem(401);
}

#[tokio::test]
async fn patch_with_an_empty_object_changes_nothing() {
    let app = spawn_app().await;
    let alice = app.register_and_login("Alice", "alice@example.com").await;
    let before = app.me(&alice.access_token).await.json();
    let reply = app.patch(&alice.id, &json!({}), &alice.access_token).await;
    reply.assert_status(200);
    let after = reply.json();
    for field in ["name", "email", "username", "role", "active"] {
        assert_eq!(after[field], before[field]);
    }
}

#[tokio::test]
async fn username_null_clears_it() {
    let app = spawn_app().await;
    app.register_user("Alice", "alice@example.com", Some("alice"))
        .await;
    let alice = app.login_session("alice@example.com", PASSWORD).await;
    let reply = app
        .patch(&alice.id, &json!({"username": null}), &alice.access_token)
        .await;
    reply.assert_status(200);
    assert_eq!(reply.json()["username"], Value::Null);
    app.login_username("alice", PASSWORD)
        .await
        .assert_problem(401);
    // And the name is free for someone else.
    app.register_user("Other", "other@example.com", Some("ALICE"))
        .await;
}

#[tokio::test]
async fn name_null_returns_422() {
    let app = spawn_app().await;
    let alice = app.register_and_login("Alice", "alice@example.com").await;
    app.patch(&alice.id, &json!({"name": null}), &alice.access_token)
        .await
        .assert_invalid_fields(&["name"]);
    app.patch(
        &alice.id,
        &json!({"email": null, "name": ""}),
        &alice.access_token,
    )
    .await
    .assert_invalid_fields(&["email", "name"]);
}

#[tokio::test]
async fn update_returns_422_for_invalid_values_and_unknown_fields() {
    let app = spawn_app().await;
    let alice = app.register_and_login("Alice", "alice@example.com").await;
    app.patch(
        &alice.id,
        &json!({"email": "nope", "username": "x", "created_at": "2020-01-01T00:00:00Z"}),
        &alice.access_token,
    )
    .await
    .assert_invalid_fields(&["email", "username", "created_at"]);
}

#[tokio::test]
async fn update_returns_409_for_an_email_or_username_already_taken() {
    let app = spawn_app().await;
    app.register_user("Bob", "bob@example.com", Some("bobby"))
        .await;
    let alice = app.register_and_login("Alice", "alice@example.com").await;
    app.patch(
        &alice.id,
        &json!({"email": "BOB@example.com", "current_password": PASSWORD}),
        &alice.access_token,
    )
    .await
    .assert_problem(409);
    app.patch(
        &alice.id,
        &json!({"username": "Bobby"}),
        &alice.access_token,
    )
    .await
    .assert_problem(409);
}

#[tokio::test]
async fn user_updating_someone_else_gets_403() {
    let app = spawn_app().await;
    let (alice, bob) = two_users(&app).await;
    app.update(&bob.id, &json!({"name": "Hacked"}), &alice.access_token)
        .await
        .assert_problem(403);
    app.patch(&bob.id, &json!({"name": "Hacked"}), &alice.access_token)
        .await
        .assert_problem(403);
    let admin = app.admin_token().await;
    assert_eq!(app.get_user(&bob.id, &admin).await.json()["name"], "Bob");
}

#[tokio::test]
async fn non_admin_setting_role_or_active_gets_403() {
    let app = spawn_app().await;
    let alice = app.register_and_login("Alice", "alice@example.com").await;
    app.patch(&alice.id, &json!({"role": "admin"}), &alice.access_token)
        .await
        .assert_problem(403);
    app.patch(&alice.id, &json!({"active": false}), &alice.access_token)
        .await
        .assert_problem(403);
    app.update(&alice.id, &json!({"role": "user"}), &alice.access_token)
        .await
        .assert_problem(403);
    assert_eq!(app.me(&alice.access_token).await.json()["role"], "user");
}

#[tokio::test]
async fn admin_can_set_role_and_active() {
    let app = spawn_app().await;
    let alice = app.register_and_login("Alice", "alice@example.com").await;
    let admin = app.admin_token().await;
    let reply = app
        .patch(&alice.id, &json!({"role": "admin"}), &admin)
        .await;
    reply.assert_status(200);
    assert_eq!(reply.json()["role"], "admin");
    let reply = app
        .patch(&alice.id, &json!({"active": false}), &admin)
        .await;
    reply.assert_status(200);
    assert_eq!(reply.json()["active"], false);
    app.patch(&alice.id, &json!({"role": "root"}), &admin)
        .await
        .assert_invalid_fields(&["role"]);
}

#[tokio::test]
async fn changing_own_password_without_current_password_returns_403() {
    let app = spawn_app().await;
    let alice = app.register_and_login("Alice", "alice@example.com").await;
    let body = app
        .patch(
            &alice.id,
            &json!({"password": OTHER_PASSWORD}),
            &alice.access_token,
        )
        .await
        .assert_problem(403);
    // The field is named, for a form to mark.
    assert_eq!(
        body["errors"],
        json!([{"field": "current_password", "message": "is missing or wrong"}]),
        "{body}"
    );
    app.login_email("alice@example.com", PASSWORD)
        .await
        .assert_status(200);
}

#[tokio::test]
async fn changing_own_password_with_a_wrong_current_password_returns_403() {
    let app = spawn_app().await;
    let alice = app.register_and_login("Alice", "alice@example.com").await;
    app.patch(
        &alice.id,
        &json!({"password": OTHER_PASSWORD, "current_password": "not my password"}),
        &alice.access_token,
    )
    .await
    .assert_problem(403);
    app.login_email("alice@example.com", OTHER_PASSWORD)
        .await
        .assert_problem(401);
}

#[tokio::test]
async fn changing_own_password_with_current_password_works_and_ends_old_tokens() {
    let app = spawn_app().await;
    let alice = app.register_and_login("Alice", "alice@example.com").await;
    let reply = app
        .patch(
            "me",
            &json!({"password": OTHER_PASSWORD, "current_password": PASSWORD}),
            &alice.access_token,
        )
        .await;
    reply.assert_status(200);
    assert!(!reply.text.contains(OTHER_PASSWORD));
    // The token issued before the change is refused...
    app.me(&alice.access_token).await.assert_problem(401);
    // ...and so is the refresh token of that session.
    app.refresh(&alice.refresh_token).await.assert_problem(401);
    app.login_email("alice@example.com", PASSWORD)
        .await
        .assert_problem(401);
    let fresh = app.login_session("alice@example.com", OTHER_PASSWORD).await;
    app.me(&fresh.access_token).await.assert_status(200);
}

#[tokio::test]
async fn new_password_is_validated() {
    let app = spawn_app().await;
    let alice = app.register_and_login("Alice", "alice@example.com").await;
    app.patch(
        &alice.id,
        &json!({"password": "short", "current_password": PASSWORD}),
        &alice.access_token,
    )
    .await
    .assert_invalid_fields(&["password"]);
    app.patch(
        &alice.id,
        &json!({"password": "x".repeat(73), "current_password": PASSWORD}),
        &alice.access_token,
    )
    .await
    .assert_invalid_fields(&["password"]);
}

#[tokio::test]
async fn admin_sets_someones_password_without_current_password() {
    let app = spawn_app().await;
    let alice = app.register_and_login("Alice", "alice@example.com").await;
    let admin = app.admin_token().await;
    app.update(&alice.id, &json!({"password": OTHER_PASSWORD}), &admin)
        .await
        .assert_status(200);
    app.login_email("alice@example.com", OTHER_PASSWORD)
        .await
        .assert_status(200);
    app.login_email("alice@example.com", PASSWORD)
        .await
        .assert_problem(401);
    app.me(&alice.access_token).await.assert_problem(401);
    // The admin's own token is unaffected.
    app.me(&admin).await.assert_status(200);
}

// ---------------------------------------------------------------- /me

#[tokio::test]
async fn me_supports_get_put_patch_and_delete() {
    let app = spawn_app().await;
    let alice = app.register_and_login("Alice", "alice@example.com").await;
    let me = app.me(&alice.access_token).await;
    me.assert_status(200);
    assert_eq!(me.json()["id"], alice.id.as_str());

    let put = app
        .put_json(
            "/api/users/me",
            &json!({"name": "Put Name"}),
            Some(&alice.access_token),
        )
        .await;
    put.assert_status(200);
    assert_eq!(put.json()["name"], "Put Name");
    assert_eq!(put.json()["email"], "alice@example.com");

    let patch = app
        .patch_json(
            "/api/users/me",
            &json!({"username": "alice_l"}),
            Some(&alice.access_token),
        )
        .await;
    patch.assert_status(200);
    assert_eq!(patch.json()["username"], "alice_l");
    assert_eq!(patch.json()["name"], "Put Name");

    app.patch_json(
        "/api/users/me",
        &json!({"role": "admin"}),
        Some(&alice.access_token),
    )
    .await
    .assert_problem(403);

    let delete = app.delete("me", &alice.access_token).await;
    delete.assert_status(204);
    assert!(delete.text.is_empty());
    app.me(&alice.access_token).await.assert_problem(401);
    app.login_email("alice@example.com", PASSWORD)
        .await
        .assert_problem(401);
    let admin = app.admin_token().await;
    app.get_user(&alice.id, &admin).await.assert_problem(404);
}

// ---------------------------------------------------------------- deleting

#[tokio::test]
async fn user_can_delete_themselves_by_id_and_the_token_is_then_refused() {
    let app = spawn_app().await;
    let alice = app.register_and_login("Alice", "alice@example.com").await;
    app.delete(&alice.id, &alice.access_token)
        .await
        .assert_status(204);
    app.me(&alice.access_token).await.assert_problem(401);
    app.refresh(&alice.refresh_token).await.assert_problem(401);
    // The address is free again.
    app.register_user("Alice Again", "alice@example.com", None)
        .await;
}

#[tokio::test]
async fn user_deleting_someone_else_gets_403() {
    let app = spawn_app().await;
    let (alice, bob) = two_users(&app).await;
    app.delete(&bob.id, &alice.access_token)
        .await
        .assert_problem(403);
    app.me(&bob.access_token).await.assert_status(200);
}

#[tokio::test]
async fn admin_can_delete_a_user() {
    let app = spawn_app().await;
    let alice = app.register_and_login("Alice", "alice@example.com").await;
    let admin = app.admin_token().await;
    app.delete(&alice.id, &admin).await.assert_status(204);
    app.get_user(&alice.id, &admin).await.assert_problem(404);
    app.delete(&alice.id, &admin).await.assert_problem(404);
}

// ---------------------------------------------------------------- activate / deactivate

#[tokio::test]
async fn admin_deactivates_and_activates_a_user() {
    let app = spawn_app().await;
    let alice = app.register_and_login("Alice", "alice@example.com").await;
    let admin = app.admin_token().await;

    let reply = app.deactivate(&alice.id, &admin).await;
    reply.assert_status(200);
    assert_eq!(reply.json()["active"], false);
    assert_eq!(reply.json()["id"], alice.id.as_str());
    // The token is refused once the user is deactivated.
    app.me(&alice.access_token).await.assert_problem(401);
    app.login_email("alice@example.com", PASSWORD)
        .await
        .assert_problem(401);

    let reply = app.activate(&alice.id, &admin).await;
    reply.assert_status(200);
    assert_eq!(reply.json()["active"], true);
    // Deactivation ended her sessions: the old token stays refused; a new login works.
    app.me(&alice.access_token).await.assert_problem(401);
    app.login_email("alice@example.com", PASSWORD)
        .await
        .assert_status(200);
}

#[tokio::test]
async fn non_admin_cannot_activate_or_deactivate() {
    let app = spawn_app().await;
    let (alice, bob) = two_users(&app).await;
    app.deactivate(&bob.id, &alice.access_token)
        .await
        .assert_problem(403);
    app.deactivate(&alice.id, &alice.access_token)
        .await
        .assert_problem(403);
    app.activate(&alice.id, &alice.access_token)
        .await
        .assert_problem(403);
    // Admin-only routes refuse a non-admin before looking at the id.
    app.activate("not-an-id", &alice.access_token)
        .await
        .assert_problem(403);
    app.me(&bob.access_token).await.assert_status(200);
}

// ---------------------------------------------------------------- the last admin

#[tokio::test]
async fn last_active_admin_cannot_be_deleted_deactivated_or_demoted() {
    let app = spawn_app().await;
    let admin = app.admin_session().await;
    let token = &admin.access_token;
    app.delete(&admin.id, token).await.assert_problem(409);
    app.delete("me", token).await.assert_problem(409);
    app.deactivate(&admin.id, token).await.assert_problem(409);
    app.patch(&admin.id, &json!({"role": "user"}), token)
        .await
        .assert_problem(409);
    app.patch(&admin.id, &json!({"active": false}), token)
        .await
        .assert_problem(409);
    let me = app.me(token).await.json();
    assert_eq!(me["role"], "admin");
    assert_eq!(me["active"], true);
}

#[tokio::test]
async fn an_inactive_second_admin_does_not_count() {
    let app = spawn_app().await;
    let admin = app.admin_session().await;
    let second = app.second_admin(&admin.access_token).await;
    app.deactivate(&second.id, &admin.access_token)
        .await
        .assert_status(200);
    app.delete(&admin.id, &admin.access_token)
        .await
        .assert_problem(409);
}

#[tokio::test]
async fn an_admin_can_be_demoted_once_a_second_admin_exists() {
    let app = spawn_app().await;
    let admin = app.admin_session().await;
    let second = app.second_admin(&admin.access_token).await;
    let reply = app
        .patch(&admin.id, &json!({"role": "user"}), &second.access_token)
        .await;
    reply.assert_status(200);
    assert_eq!(reply.json()["role"], "user");
    // Now the second admin is the last one.
    app.patch(&second.id, &json!({"role": "user"}), &second.access_token)
        .await
        .assert_problem(409);
}

#[tokio::test]
async fn an_admin_can_be_deactivated_once_a_second_admin_exists() {
    let app = spawn_app().await;
    let admin = app.admin_session().await;
    let second = app.second_admin(&admin.access_token).await;
    app.deactivate(&admin.id, &second.access_token)
        .await
        .assert_status(200);
    app.me(&admin.access_token).await.assert_problem(401);
    app.deactivate(&second.id, &second.access_token)
        .await
        .assert_problem(409);
}

#[tokio::test]
async fn an_admin_can_be_deleted_once_a_second_admin_exists() {
    let app = spawn_app().await;
    let admin = app.admin_session().await;
    let second = app.second_admin(&admin.access_token).await;
    app.delete("me", &admin.access_token)
        .await
        .assert_status(204);
    app.delete(&second.id, &second.access_token)
        .await
        .assert_problem(409);
}

// ---------------------------------------------------------------- admin create

#[tokio::test]
async fn admin_creates_a_user_with_role_and_active() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let reply = app
        .create_user(
            &json!({
                "name": "Carol", "email": "Carol@Example.com", "password": PASSWORD,
                "username": "carol", "role": "admin", "active": false
            }),
            &admin,
        )
        .await;
    reply.assert_status(201);
    let user = reply.json();
    let id = user["id"].as_str().unwrap();
    assert_eq!(
        reply.header("location"),
        Some(format!("/api/users/{id}").as_str())
    );
    assert_eq!(user["email"], "carol@example.com");
    assert_eq!(user["role"], "admin");
    assert_eq!(user["active"], false);
    assert!(!reply.text.contains(PASSWORD));
    // Inactive: cannot sign in.
    app.login_email("carol@example.com", PASSWORD)
        .await
        .assert_problem(401);
}

#[tokio::test]
async fn admin_create_defaults_to_an_active_user() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let reply = app
        .create_user(
            &json!({"name": "Dan", "email": "dan@example.com", "password": PASSWORD}),
            &admin,
        )
        .await;
    reply.assert_status(201);
    assert_eq!(reply.json()["role"], "user");
    assert_eq!(reply.json()["active"], true);
    app.login_email("dan@example.com", PASSWORD)
        .await
        .assert_status(200);
}

#[tokio::test]
async fn admin_create_validates_and_detects_duplicates() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    app.create_user(
        &json!({"name": "", "email": "x", "password": "p", "nickname": "z"}),
        &admin,
    )
    .await
    .assert_invalid_fields(&["name", "email", "password", "nickname"]);
    app.create_user(
        &json!({"name": "A", "email": "a@example.com", "password": PASSWORD, "role": "boss"}),
        &admin,
    )
    .await
    .assert_invalid_fields(&["role"]);
    app.create_user(
        &json!({"name": "A", "email": "ADMIN@example.com", "password": PASSWORD}),
        &admin,
    )
    .await
    .assert_problem(409);
}

#[tokio::test]
async fn non_admin_cannot_create_users() {
    let app = spawn_app().await;
    let alice = app.register_and_login("Alice", "alice@example.com").await;
    app.create_user(
        &json!({"name": "X", "email": "x@example.com", "password": PASSWORD}),
        &alice.access_token,
    )
    .await
    .assert_problem(403);
}

// ---------------------------------------------------------------- listing

#[tokio::test]
async fn non_admin_listing_users_gets_403() {
    let app = spawn_app().await;
    let alice = app.register_and_login("Alice", "alice@example.com").await;
    app.list("", &alice.access_token).await.assert_problem(403);
}

/// Creates `n` users named `User 00`.. with addresses `user00@example.com`.., in order.
async fn create_users(app: &TestApp, admin: &str, n: usize) {
    for i in 0..n {
        app.create_user(
            &json!({
                "name": format!("User {i:02}"),
                "email": format!("user{i:02}@example.com"),
                "password": PASSWORD
            }),
            admin,
        )
        .await
        .assert_status(201);
    }
}

fn emails(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["email"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn list_pages_with_totals() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    create_users(&app, &admin, 24).await; // 25 users with the admin

    let reply = app.list("", &admin).await;
    reply.assert_status(200);
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    let page = reply.json();
    assert_eq!(page["page"], 1);
    assert_eq!(page["per_page"], 20);
    assert_eq!(page["total"], 25);
    assert_eq!(page["total_pages"], 2);
    assert_eq!(page["items"].as_array().unwrap().len(), 20);
    let first_item = &page["items"][0];
    assert!(first_item["id"].is_string() && first_item.get("password_hash").is_none());
    assert!(!reply.text.contains("$2"), "a hash leaked");

    let page = app.list("page=3&per_page=10", &admin).await.json();
    assert_eq!(page["page"], 3);
    assert_eq!(page["per_page"], 10);
    assert_eq!(page["total"], 25);
    assert_eq!(page["total_pages"], 3);
    assert_eq!(page["items"].as_array().unwrap().len(), 5);

    // Past the end: an empty page, not an error.
    let page = app.list("page=9&per_page=10", &admin).await.json();
    assert_eq!(page["items"].as_array().unwrap().len(), 0);
    assert_eq!(page["total"], 25);

    // Pages do not overlap and together hold everyone.
    let mut all = Vec::new();
    for n in 1..=3 {
        all.extend(emails(
            &app.list(&format!("page={n}&per_page=10&sort=email"), &admin)
                .await
                .json(),
        ));
    }
    let mut unique = all.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 25);
    assert_eq!(all, unique, "email order across pages");

    let page = app.list("per_page=100", &admin).await.json();
    assert_eq!(page["items"].as_array().unwrap().len(), 25);
    assert_eq!(page["total_pages"], 1);
}

#[tokio::test]
async fn list_returns_400_for_out_of_range_or_malformed_parameters() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    for query in [
        "per_page=0",
        "per_page=101",
        "per_page=-1",
        "per_page=abc",
        "page=0",
        "page=-1",
        "page=x",
        "sort=password_hash",
        "sort=-id",
        "sort=",
        "role=superuser",
        "active=maybe",
        "q=a%00b",
        "q=line%0Abreak",
        // Not UTF-8 once decoded.
        "q=%ff",
        "q=caf%C3",
    ] {
        app.list(query, &admin).await.assert_problem(400);
    }
    app.list("per_page=1", &admin).await.assert_status(200);
    app.list("per_page=100", &admin).await.assert_status(200);
}

#[tokio::test]
async fn list_q_is_a_case_insensitive_substring_of_name_email_or_username() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    for (name, email, username) in [
        ("Mario Rossi", "mario@example.com", None),
        ("Luigi", "luigi@plumbers.org", Some("GreenMarIo")),
        ("Peach", "peach@castle.io", None),
        ("Toad", "mushroom.MARIOfan@castle.io", None),
    ] {
        let mut body = json!({"name": name, "email": email, "password": PASSWORD});
        if let Some(username) = username {
            body["username"] = json!(username);
        }
        app.create_user(&body, &admin).await.assert_status(201);
    }
    let page = app.list("q=MARIO&sort=email", &admin).await.json();
    assert_eq!(page["total"], 3, "{page}");
    assert_eq!(
        emails(&page),
        [
            "luigi@plumbers.org",
            "mario@example.com",
            "mushroom.mariofan@castle.io"
        ]
    );
    let page = app.list("q=rOsS", &admin).await.json();
    assert_eq!(emails(&page), ["mario@example.com"]);
    let page = app.list("q=castle&sort=email", &admin).await.json();
    assert_eq!(page["total"], 2);
    let page = app.list("q=nobody-has-this", &admin).await.json();
    assert_eq!(page["total"], 0);
    assert_eq!(page["total_pages"], 0);
    // Characters special to SQL LIKE or regexes are taken literally.
    app.create_user(
        &json!({"name": "Percent 100%", "email": "pct@example.com", "password": PASSWORD}),
        &admin,
    )
    .await
    .assert_status(201);
    assert_eq!(app.list("q=%25", &admin).await.json()["total"], 1);
    assert_eq!(app.list("q=_", &admin).await.json()["total"], 0);
    assert_eq!(app.list("q=.*", &admin).await.json()["total"], 0);
}

#[tokio::test]
async fn list_filters_by_role_and_active() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    for (email, role, active) in [
        ("u1@example.com", "user", true),
        ("u2@example.com", "user", false),
        ("a2@example.com", "admin", true),
        ("a3@example.com", "admin", false),
    ] {
        app.create_user(
            &json!({"name": "X", "email": email, "password": PASSWORD, "role": role, "active": active}),
            &admin,
        )
        .await
        .assert_status(201);
    }
    let sorted = |q: &str| format!("{q}&sort=email");
    let page = app.list(&sorted("role=admin"), &admin).await.json();
    assert_eq!(
        emails(&page),
        ["a2@example.com", "a3@example.com", "admin@example.com"]
    );
    let page = app.list(&sorted("role=user"), &admin).await.json();
    assert_eq!(emails(&page), ["u1@example.com", "u2@example.com"]);
    let page = app.list(&sorted("active=false"), &admin).await.json();
    assert_eq!(emails(&page), ["a3@example.com", "u2@example.com"]);
    let page = app
        .list(&sorted("active=true&role=admin"), &admin)
        .await
        .json();
    assert_eq!(emails(&page), ["a2@example.com", "admin@example.com"]);
    assert_eq!(page["total"], 2);
    let page = app
        .list(&sorted("active=true&role=user&q=U1"), &admin)
        .await
        .json();
    assert_eq!(emails(&page), ["u1@example.com"]);
}

#[tokio::test]
async fn list_sorts_in_every_order() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    // Names, emails and creation order all disagree, so each sort is told apart.
    let created = [
        ("Charlie", "b@example.com"),
        ("Alpha", "d@example.com"),
        ("Delta", "a@example.com"),
        ("Bravo", "c@example.com"),
    ];
    for (name, email) in created {
        app.create_user(
            &json!({"name": name, "email": email, "password": PASSWORD}),
            &admin,
        )
        .await
        .assert_status(201);
        // Distinct creation times even on a coarse clock.
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let fetch = |sort: &'static str| {
        let app = &app;
        let admin = &admin;
        async move {
            let query = if sort.is_empty() {
                "q=example.com".to_owned()
            } else {
                format!("q=example.com&sort={sort}")
            };
            let reply = app.list(&query, admin).await;
            reply.assert_status(200);
            let page = reply.json();
            let names: Vec<String> = page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|u| u["name"].as_str().unwrap().to_owned())
                .collect();
            names
        }
    };
    // The seeded admin (admin@example.com, "Admin", created first) matches q too.
    assert_eq!(
        fetch("created_at").await,
        ["Admin", "Charlie", "Alpha", "Delta", "Bravo"]
    );
    assert_eq!(
        fetch("-created_at").await,
        ["Bravo", "Delta", "Alpha", "Charlie", "Admin"]
    );
    // The default is -created_at.
    assert_eq!(
        fetch("").await,
        ["Bravo", "Delta", "Alpha", "Charlie", "Admin"]
    );
    assert_eq!(
        fetch("name").await,
        ["Admin", "Alpha", "Bravo", "Charlie", "Delta"]
    );
    assert_eq!(
        fetch("-name").await,
        ["Delta", "Charlie", "Bravo", "Alpha", "Admin"]
    );
    // a@, admin@, b@, c@, d@
    assert_eq!(
        fetch("email").await,
        ["Delta", "Admin", "Charlie", "Bravo", "Alpha"]
    );
    assert_eq!(
        fetch("-email").await,
        ["Alpha", "Bravo", "Charlie", "Admin", "Delta"]
    );

    // created_at really is ascending in the ascending order.
    let page = app.list("sort=created_at", &admin).await.json();
    let stamps: Vec<time::OffsetDateTime> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            time::OffsetDateTime::parse(
                u["created_at"].as_str().unwrap(),
                &time::format_description::well_known::Rfc3339,
            )
            .unwrap()
        })
        .collect();
    assert!(stamps.windows(2).all(|w| w[0] <= w[1]), "{stamps:?}");
}
