//! `Idempotency-Key` on POST /api/auth/register and POST /api/users: a retry gets the first
//! answer again and creates nothing; another body is refused; only successes are kept.

use futures_util::future::join_all;
use reqwest::header::HeaderValue;
use serde_json::{Value, json};

use crate::helpers::{PASSWORD, Reply, TestApp, random_hex, spawn_app};

const KEY: &str = "Idempotency-Key";

async fn post_with_key(
    app: &TestApp,
    path: &str,
    key: HeaderValue,
    body: &Value,
    token: Option<&str>,
) -> Reply {
    let mut request = app.client.post(app.url(path)).header(KEY, key).json(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    Reply::from(request.send().await.expect("the request is sent")).await
}

async fn create_with_key(app: &TestApp, key: &str, body: &Value, token: &str) -> Reply {
    let key = HeaderValue::from_str(key).expect("a header value");
    post_with_key(app, "/api/users", key, body, Some(token)).await
}

async fn register_with_key(app: &TestApp, key: &str, body: &Value) -> Reply {
    let key = HeaderValue::from_str(key).expect("a header value");
    post_with_key(app, "/api/auth/register", key, body, None).await
}

async fn total_users(app: &TestApp, token: &str) -> u64 {
    let reply = app.list("per_page=1", token).await;
    reply.assert_status(200);
    reply.json()["total"].as_u64().expect("a total")
}

fn user(email: &str) -> Value {
    json!({"name": "Ida Empotent", "email": email, "password": PASSWORD})
}

#[tokio::test]
async fn a_repeated_key_replays_the_first_answer_and_creates_one_user() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    let before = total_users(&app, &token).await;
    let key = random_hex(16);
    let body = user("ida@example.com");

    let first = create_with_key(&app, &key, &body, &token).await;
    first.assert_status(201);
    assert_eq!(first.header("idempotent-replayed"), None);
    let again = create_with_key(&app, &key, &body, &token).await;
    again.assert_status(201);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.json(), first.json());
    assert_eq!(again.header("location"), first.header("location"));
    assert!(first.header("location").is_some());
    assert_eq!(again.header("etag"), first.header("etag"));
    assert!(first.header("etag").is_some());
    assert_eq!(
        again.header("content-type"),
        Some("application/json"),
        "{again:?}"
    );
    assert_eq!(total_users(&app, &token).await, before + 1);
}

#[tokio::test]
async fn the_same_key_with_another_body_is_refused() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    let key = random_hex(16);
    create_with_key(&app, &key, &user("one@example.com"), &token)
        .await
        .assert_status(201);
    let before = total_users(&app, &token).await;
    let other = create_with_key(&app, &key, &user("two@example.com"), &token).await;
    let problem = other.assert_problem(422);
    assert!(
        problem["type"]
            .as_str()
            .unwrap()
            .ends_with("idempotency-key-reused"),
        "{problem}"
    );
    assert_eq!(total_users(&app, &token).await, before);
}

#[tokio::test]
async fn keys_are_per_admin_and_anyones_for_registration() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    let second = app.second_admin(&token).await;
    let key = random_hex(16);
    let first = create_with_key(&app, &key, &user("mine@example.com"), &token).await;
    first.assert_status(201);
    // Another admin's key of the same name is their own: a new user.
    let theirs = create_with_key(
        &app,
        &key,
        &user("theirs@example.com"),
        &second.access_token,
    )
    .await;
    theirs.assert_status(201);
    assert_eq!(theirs.header("idempotent-replayed"), None);
    assert_ne!(theirs.json()["id"], first.json()["id"]);

    // Registration: anyone's, so a retry from anywhere replays.
    let body = json!({"name": "Reg Istrant", "email": "reg@example.com", "password": PASSWORD});
    let registered = register_with_key(&app, &key, &body).await;
    registered.assert_status(201);
    let replayed = register_with_key(&app, &key, &body).await;
    replayed.assert_status(201);
    assert_eq!(replayed.header("idempotent-replayed"), Some("true"));
    assert_eq!(replayed.json(), registered.json());
    assert_eq!(replayed.header("location"), registered.header("location"));
    assert_eq!(replayed.header("etag"), registered.header("etag"));
    assert!(registered.header("etag").is_some());
    register_with_key(
        &app,
        &key,
        &json!({"name": "Other", "email": "other@example.com", "password": PASSWORD}),
    )
    .await
    .assert_problem(422);
}

#[tokio::test]
async fn concurrent_requests_with_one_key_create_one_user() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    let before = total_users(&app, &token).await;
    let key = random_hex(16);
    let body = user("race@example.com");
    // Eight requests with one key, at once.
    let replies = join_all((0..8).map(|_| create_with_key(&app, &key, &body, &token))).await;
    let mut created = 0;
    for reply in &replies {
        match (reply.status.as_u16(), reply.header("idempotent-replayed")) {
            (201, None) => created += 1,
            (201, Some("true")) => {}
            (409, _) => {
                let problem = reply.assert_problem(409);
                assert!(
                    problem["type"]
                        .as_str()
                        .unwrap()
                        .ends_with("idempotency-key-in-flight"),
                    "{problem}"
                );
            }
            other => panic!("unexpected {other:?}: {}", reply.text),
        }
    }
    assert_eq!(created, 1);
    assert_eq!(total_users(&app, &token).await, before + 1);
}

#[tokio::test]
async fn a_malformed_key_is_refused_naming_the_header() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    let before = total_users(&app, &token).await;
    let bad = [
        HeaderValue::from_static(""),
        HeaderValue::from_str(&"k".repeat(256)).unwrap(),
        HeaderValue::from_bytes("clé".as_bytes()).unwrap(),
        HeaderValue::from_static("with space"),
    ];
    for key in bad {
        for (path, token) in [
            ("/api/users", Some(token.as_str())),
            ("/api/auth/register", None),
        ] {
            let reply =
                post_with_key(&app, path, key.clone(), &user("bad@example.com"), token).await;
            let problem = reply.assert_problem(400);
            assert!(
                problem["detail"]
                    .as_str()
                    .unwrap()
                    .contains("Idempotency-Key"),
                "{key:?} {path}: {problem}"
            );
        }
    }
    // The longest key is fine.
    create_with_key(&app, &"k".repeat(255), &user("long@example.com"), &token)
        .await
        .assert_status(201);
    assert_eq!(total_users(&app, &token).await, before + 1);
}

/// Only successes are kept: a first request that failed (here 409, the email is taken)
/// frees its key, so the same request runs again and a corrected one succeeds under it;
/// from then on the key belongs to the corrected request.
#[tokio::test]
async fn a_failed_first_request_is_not_stored() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    app.register_user("Taken", "taken@example.com", None).await;
    let key = random_hex(16);
    let taken = user("taken@example.com");
    create_with_key(&app, &key, &taken, &token)
        .await
        .assert_problem(409);
    let again = create_with_key(&app, &key, &taken, &token).await;
    again.assert_problem(409);
    assert_eq!(again.header("idempotent-replayed"), None);

    let fixed = user("fixed@example.com");
    let created = create_with_key(&app, &key, &fixed, &token).await;
    created.assert_status(201);
    assert_eq!(created.header("idempotent-replayed"), None);
    let replayed = create_with_key(&app, &key, &fixed, &token).await;
    assert_eq!(replayed.header("idempotent-replayed"), Some("true"));
    assert_eq!(replayed.json(), created.json());
    create_with_key(&app, &key, &taken, &token)
        .await
        .assert_problem(422);
}

#[tokio::test]
async fn the_document_declares_the_header_and_its_answers() {
    let app = spawn_app().await;
    let spec = app.get("/api/openapi.json", None).await.json();
    for path in ["/api/users", "/api/auth/register"] {
        let operation = &spec["paths"][path]["post"];
        let parameters = operation["parameters"].as_array().expect("parameters");
        let header = parameters
            .iter()
            .find(|p| p["name"] == KEY)
            .unwrap_or_else(|| panic!("{path}: no {KEY} in {parameters:?}"));
        assert_eq!(header["in"], "header");
        assert_eq!(header["schema"]["maxLength"], 255);
        let responses = &operation["responses"];
        for status in ["400", "409", "422"] {
            assert!(responses[status].is_object(), "{path} {status}");
        }
        assert!(
            responses["201"]["headers"]["Idempotent-Replayed"].is_object(),
            "{path}: {}",
            responses["201"]
        );
    }
}
