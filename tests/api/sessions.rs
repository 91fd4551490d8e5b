//! Sessions: what one login starts, listed and ended by their user or an admin; an ended
//! session's tokens are refused at once.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde_json::{Value, json};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use crate::helpers::{PASSWORD, Reply, Session, TestApp, spawn_app};

// ---------------------------------------------------------------- helpers

/// The claims of a JWT, read without checking its signature.
pub(crate) fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url"))
        .expect("JSON claims")
}

/// The session id (`sid` claim) of an access token.
pub(crate) fn sid_of(token: &str) -> String {
    claims_of(token)["sid"]
        .as_str()
        .expect("a sid claim")
        .to_owned()
}

fn instant(value: &Value) -> OffsetDateTime {
    OffsetDateTime::parse(value.as_str().expect("a timestamp"), &Rfc3339)
        .unwrap_or_else(|e| panic!("not RFC 3339 ({e}): {value}"))
}

/// Logs in with a `User-Agent` of our choosing.
pub(crate) async fn login_as_agent(
    app: &TestApp,
    email: &str,
    password: &str,
    user_agent: &str,
) -> Session {
    let reply = Reply::from(
        app.client
            .post(app.url("/api/auth/login"))
            .header("user-agent", user_agent)
            .json(&json!({"email": email, "password": password}))
            .send()
            .await
            .expect("the request is sent"),
    )
    .await;
    reply.assert_status(200);
    let tokens = reply.json();
    let access_token = tokens["access_token"].as_str().unwrap().to_owned();
    let id = claims_of(&access_token)["sub"].as_str().unwrap().to_owned();
    Session {
        id,
        email: email.to_owned(),
        password: password.to_owned(),
        access_token,
        refresh_token: tokens["refresh_token"].as_str().unwrap().to_owned(),
    }
}

pub(crate) async fn delete_path(app: &TestApp, path: &str, token: &str) -> Reply {
    Reply::from(
        app.client
            .delete(app.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("the request is sent"),
    )
    .await
}

async fn my_sessions(app: &TestApp, token: &str) -> Vec<Value> {
    let reply = app.get("/api/users/me/sessions", Some(token)).await;
    reply.assert_status(200);
    reply.json()["items"].as_array().expect("items").clone()
}

async fn user_sessions(app: &TestApp, id: &str, token: &str) -> Reply {
    app.get(&format!("/api/users/{id}/sessions"), Some(token))
        .await
}

fn ids(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|item| item["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Alice with two sessions, the second started after the first.
async fn alice_twice(app: &TestApp) -> (Session, Session) {
    app.register_user("Alice", "alice@example.com", None).await;
    let first = login_as_agent(app, "alice@example.com", PASSWORD, "agent-one/1.0").await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let second = login_as_agent(app, "alice@example.com", PASSWORD, "agent-two/2.0").await;
    (first, second)
}

// ---------------------------------------------------------------- listing

#[tokio::test]
async fn each_login_is_a_session_listed_newest_first_with_the_current_one_marked() {
    let app = spawn_app().await;
    let (first, second) = alice_twice(&app).await;
    let items = my_sessions(&app, &second.access_token).await;
    assert_eq!(items.len(), 2, "{items:?}");
    assert_eq!(items[0]["user_agent"], "agent-two/2.0");
    assert_eq!(items[1]["user_agent"], "agent-one/1.0");
    for item in &items {
        let mut keys: Vec<&str> = item
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "created_at",
                "current",
                "expires_at",
                "id",
                "ip",
                "last_used_at",
                "user_agent"
            ],
            "{item}"
        );
        assert_eq!(item["ip"], "127.0.0.1", "{item}");
        let created = instant(&item["created_at"]);
        assert!(instant(&item["last_used_at"]) >= created, "{item}");
        assert!(instant(&item["expires_at"]) > created, "{item}");
    }
    assert!(instant(&items[0]["created_at"]) > instant(&items[1]["created_at"]));
    assert_eq!(items[0]["current"], json!(true));
    assert_eq!(items[1]["current"], json!(false));
    // Asked with the other token, the other one is current.
    let items = my_sessions(&app, &first.access_token).await;
    assert_eq!(items[0]["current"], json!(false));
    assert_eq!(items[1]["current"], json!(true));
    // The access tokens carry their session's id.
    assert_eq!(
        sid_of(&second.access_token),
        items[0]["id"].as_str().unwrap()
    );
    assert_eq!(
        sid_of(&first.access_token),
        items[1]["id"].as_str().unwrap()
    );
}

#[tokio::test]
async fn a_session_lives_as_long_as_its_refresh_tokens() {
    let app = spawn_app().await;
    let alice = app.register_and_login("Alice", "alice@example.com").await;
    let items = my_sessions(&app, &alice.access_token).await;
    let created = instant(&items[0]["created_at"]);
    let expires = instant(&items[0]["expires_at"]);
    let lifetime = (expires - created).whole_seconds();
    assert!((1_209_590..=1_209_610).contains(&lifetime), "{lifetime}");
    assert!(items[0]["id"].as_str().unwrap().len() >= 16);
}

#[tokio::test]
async fn a_refresh_moves_last_used_at_and_plain_requests_do_not() {
    let app = spawn_app().await;
    let alice = app.register_and_login("Alice", "alice@example.com").await;
    let before = my_sessions(&app, &alice.access_token).await;
    tokio::time::sleep(Duration::from_millis(30)).await;
    for _ in 0..3 {
        app.me(&alice.access_token).await.assert_status(200);
    }
    let unchanged = my_sessions(&app, &alice.access_token).await;
    assert_eq!(unchanged, before);
    tokio::time::sleep(Duration::from_millis(30)).await;
    let reply = app.refresh(&alice.refresh_token).await;
    reply.assert_status(200);
    let access = reply.json()["access_token"].as_str().unwrap().to_owned();
    // The same session, used later.
    assert_eq!(sid_of(&access), sid_of(&alice.access_token));
    let after = my_sessions(&app, &access).await;
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(after[0]["id"], before[0]["id"]);
    assert_eq!(after[0]["created_at"], before[0]["created_at"]);
    assert!(
        instant(&after[0]["last_used_at"]) > instant(&before[0]["last_used_at"]),
        "{:?} then {:?}",
        before[0],
        after[0]
    );
    assert!(instant(&after[0]["expires_at"]) >= instant(&before[0]["expires_at"]));
    // The access token issued before the refresh is of the same live session: still good.
    app.me(&alice.access_token).await.assert_status(200);
}

// ---------------------------------------------------------------- ending sessions

#[tokio::test]
async fn ending_another_session_refuses_its_tokens_at_once() {
    let app = spawn_app().await;
    let (first, second) = alice_twice(&app).await;
    app.me(&first.access_token).await.assert_status(200);
    let sid = sid_of(&first.access_token);
    delete_path(
        &app,
        &format!("/api/users/me/sessions/{sid}"),
        &second.access_token,
    )
    .await
    .assert_status(204);
    app.me(&first.access_token).await.assert_problem(401);
    app.refresh(&first.refresh_token).await.assert_problem(401);
    // The asking session goes on.
    app.me(&second.access_token).await.assert_status(200);
    let items = my_sessions(&app, &second.access_token).await;
    assert_eq!(ids(&items), [sid_of(&second.access_token)]);
    // Ended already: not found.
    delete_path(
        &app,
        &format!("/api/users/me/sessions/{sid}"),
        &second.access_token,
    )
    .await
    .assert_problem(404);
}

#[tokio::test]
async fn ending_the_current_session_by_id_signs_out_the_caller() {
    let app = spawn_app().await;
    let alice = app.register_and_login("Alice", "alice@example.com").await;
    let sid = sid_of(&alice.access_token);
    delete_path(
        &app,
        &format!("/api/users/me/sessions/{sid}"),
        &alice.access_token,
    )
    .await
    .assert_status(204);
    app.me(&alice.access_token).await.assert_problem(401);
    app.refresh(&alice.refresh_token).await.assert_problem(401);
}

#[tokio::test]
async fn ending_an_unknown_or_someone_elses_session_is_404() {
    let app = spawn_app().await;
    let alice = app.register_and_login("Alice", "alice@example.com").await;
    let bob = app.register_and_login("Bob", "bob@example.com").await;
    let bobs = sid_of(&bob.access_token);
    for sid in [
        "0123456789abcdef0123456789abcdef",
        "not-a-session",
        bobs.as_str(),
    ] {
        let problem = delete_path(
            &app,
            &format!("/api/users/me/sessions/{sid}"),
            &alice.access_token,
        )
        .await
        .assert_problem(404);
        assert_eq!(problem["detail"], "no such session", "{sid}");
    }
    app.me(&bob.access_token).await.assert_status(200);
    assert_eq!(my_sessions(&app, &bob.access_token).await.len(), 1);
    // Without a token: 401.
    let reply = Reply::from(
        app.client
            .delete(app.url(&format!("/api/users/me/sessions/{bobs}")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    reply.assert_problem(401);
}

#[tokio::test]
async fn signing_out_everywhere_ends_every_session_this_one_too() {
    let app = spawn_app().await;
    let (first, second) = alice_twice(&app).await;
    let bob = app.register_and_login("Bob", "bob@example.com").await;
    delete_path(&app, "/api/users/me/sessions", &first.access_token)
        .await
        .assert_status(204);
    for session in [&first, &second] {
        app.me(&session.access_token).await.assert_problem(401);
        app.refresh(&session.refresh_token)
            .await
            .assert_problem(401);
    }
    // Nobody else's.
    app.me(&bob.access_token).await.assert_status(200);
    // A new login starts afresh.
    let again = app.login_session("alice@example.com", PASSWORD).await;
    assert_eq!(my_sessions(&app, &again.access_token).await.len(), 1);
}

#[tokio::test]
async fn logout_ends_the_session_of_its_refresh_token() {
    let app = spawn_app().await;
    let (first, second) = alice_twice(&app).await;
    app.logout(&first.refresh_token).await.assert_status(204);
    app.me(&first.access_token).await.assert_problem(401);
    app.refresh(&first.refresh_token).await.assert_problem(401);
    let items = my_sessions(&app, &second.access_token).await;
    assert_eq!(ids(&items), [sid_of(&second.access_token)]);
}

#[tokio::test]
async fn refresh_token_reuse_ends_the_session() {
    let app = spawn_app().await;
    let (first, second) = alice_twice(&app).await;
    let rotated = app.refresh(&first.refresh_token).await;
    rotated.assert_status(200);
    let access = rotated.json()["access_token"].as_str().unwrap().to_owned();
    let refresh = rotated.json()["refresh_token"].as_str().unwrap().to_owned();
    app.refresh(&first.refresh_token).await.assert_problem(401);
    app.me(&access).await.assert_problem(401);
    app.refresh(&refresh).await.assert_problem(401);
    let items = my_sessions(&app, &second.access_token).await;
    assert_eq!(ids(&items), [sid_of(&second.access_token)]);
}

#[tokio::test]
async fn a_password_change_ends_every_session() {
    let app = spawn_app().await;
    let (first, second) = alice_twice(&app).await;
    let new_password = "a brand new passphrase";
    app.patch(
        "me",
        &json!({"password": new_password, "current_password": PASSWORD}),
        &first.access_token,
    )
    .await
    .assert_status(200);
    let admin = app.admin_token().await;
    let listed = user_sessions(&app, &first.id, &admin).await;
    listed.assert_status(200);
    assert_eq!(listed.json()["items"], json!([]));
    for session in [&first, &second] {
        app.me(&session.access_token).await.assert_problem(401);
        app.refresh(&session.refresh_token)
            .await
            .assert_problem(401);
    }
    let again = app.login_session("alice@example.com", new_password).await;
    assert_eq!(my_sessions(&app, &again.access_token).await.len(), 1);
}

#[tokio::test]
async fn deactivation_ends_every_session() {
    let app = spawn_app().await;
    let (first, second) = alice_twice(&app).await;
    let admin = app.admin_token().await;
    app.deactivate(&first.id, &admin).await.assert_status(200);
    let listed = user_sessions(&app, &first.id, &admin).await;
    listed.assert_status(200);
    assert_eq!(listed.json()["items"], json!([]));
    // Activated again, the old sessions stay ended.
    app.activate(&first.id, &admin).await.assert_status(200);
    for session in [&first, &second] {
        app.me(&session.access_token).await.assert_problem(401);
        app.refresh(&session.refresh_token)
            .await
            .assert_problem(401);
    }
    let listed = user_sessions(&app, &first.id, &admin).await;
    assert_eq!(listed.json()["items"], json!([]));
}

// ---------------------------------------------------------------- admins

#[tokio::test]
async fn admins_list_and_end_a_users_sessions() {
    let app = spawn_app().await;
    let (first, second) = alice_twice(&app).await;
    let admin = app.admin_token().await;
    let listed = user_sessions(&app, &first.id, &admin).await;
    listed.assert_status(200);
    let items = listed.json()["items"].as_array().unwrap().clone();
    assert_eq!(
        ids(&items),
        [sid_of(&second.access_token), sid_of(&first.access_token)]
    );
    // The admin's own session is none of these.
    assert!(items.iter().all(|item| item["current"] == json!(false)));
    delete_path(&app, &format!("/api/users/{}/sessions", first.id), &admin)
        .await
        .assert_status(204);
    for session in [&first, &second] {
        app.me(&session.access_token).await.assert_problem(401);
        app.refresh(&session.refresh_token)
            .await
            .assert_problem(401);
    }
    let listed = user_sessions(&app, &first.id, &admin).await;
    assert_eq!(listed.json()["items"], json!([]));
    // The admin's own session goes on.
    app.me(&admin).await.assert_status(200);
}

#[tokio::test]
async fn only_admins_use_the_user_session_routes_and_unknown_users_are_404() {
    let app = spawn_app().await;
    let alice = app.register_and_login("Alice", "alice@example.com").await;
    let bob = app.register_and_login("Bob", "bob@example.com").await;
    user_sessions(&app, &alice.id, &bob.access_token)
        .await
        .assert_problem(403);
    delete_path(
        &app,
        &format!("/api/users/{}/sessions", alice.id),
        &bob.access_token,
    )
    .await
    .assert_problem(403);
    app.me(&alice.access_token).await.assert_status(200);
    let admin = app.admin_token().await;
    for id in ["0123456789abcdef01234567", "not-an-id"] {
        user_sessions(&app, id, &admin).await.assert_problem(404);
        delete_path(&app, &format!("/api/users/{id}/sessions"), &admin)
            .await
            .assert_problem(404);
    }
    // A deleted user is unknown too.
    app.delete(&bob.id, &admin).await.assert_status(204);
    user_sessions(&app, &bob.id, &admin)
        .await
        .assert_problem(404);
}

// ---------------------------------------------------------------- concurrency

/// Requests with a token race the end of its session: whatever those in flight got, every
/// request that started after the end was answered is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_request_started_after_a_session_ends_is_refused() {
    let app = spawn_app().await;
    let (victim, other) = alice_twice(&app).await;
    let stop = Arc::new(AtomicBool::new(false));
    let seen: Arc<Mutex<Vec<(Instant, u16)>>> = Arc::default();
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (client, url) = (app.client.clone(), app.url("/api/users/me"));
            let token = victim.access_token.clone();
            let (stop, seen) = (stop.clone(), seen.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let started = Instant::now();
                    let response = client.get(&url).bearer_auth(&token).send().await.unwrap();
                    let status = response.status().as_u16();
                    seen.lock().unwrap().push((started, status));
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let sid = sid_of(&victim.access_token);
    delete_path(
        &app,
        &format!("/api/users/me/sessions/{sid}"),
        &other.access_token,
    )
    .await
    .assert_status(204);
    let ended = Instant::now();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::SeqCst);
    for worker in workers {
        worker.await.unwrap();
    }
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.iter().all(|(_, status)| matches!(status, 200 | 401)),
        "{seen:?}"
    );
    assert!(
        seen.iter().any(|(_, status)| *status == 200),
        "no request got through before the end"
    );
    let after: Vec<u16> = seen
        .iter()
        .filter(|(started, _)| *started > ended)
        .map(|(_, status)| *status)
        .collect();
    assert!(!after.is_empty(), "no request started after the end");
    assert!(after.iter().all(|status| *status == 401), "{after:?}");
    app.me(&victim.access_token).await.assert_problem(401);
    app.me(&other.access_token).await.assert_status(200);
}
