//! Versions of a user: `ETag` on every response carrying one user, `If-None-Match` on reads
//! (304) and `If-Match` on writes (412 when stale, and nothing changes).

use std::collections::HashSet;

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{PASSWORD, Reply, Session, TestApp, spawn_app_with};

/// A request with an optional bearer token, conditional header and JSON body.
async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    condition: Option<(&str, &str)>,
    body: Option<&Value>,
) -> Reply {
    let mut request = app.client.request(method, app.url(path)).bearer_auth(token);
    if let Some((name, value)) = condition {
        request = request.header(name, value);
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    Reply::from(request.send().await.expect("the request is sent")).await
}

/// The strong `ETag` of a reply carrying one user.
#[track_caller]
fn etag(reply: &Reply) -> String {
    let tag = reply
        .header("etag")
        .unwrap_or_else(|| panic!("no ETag ({}): {}", reply.status, reply.text))
        .to_owned();
    assert!(
        tag.starts_with('"') && tag.ends_with('"') && tag.len() > 2,
        "not a strong entity tag: {tag}"
    );
    tag
}

async fn current(app: &TestApp, id: &str, token: &str) -> (String, Value) {
    let reply = app.get_user(id, token).await;
    reply.assert_status(200);
    (etag(&reply), reply.json())
}

/// A lockout that a few wrong passwords reach, so that unlock has something to do.
async fn app() -> TestApp {
    spawn_app_with(&[("LOCKOUT_THRESHOLD", "3"), ("LOCKOUT_SECS", "600")]).await
}

async fn admin_and_user(app: &TestApp) -> (Session, Session) {
    let admin = app.admin_session().await;
    let user = app.register_and_login("Mario", "mario@example.com").await;
    (admin, user)
}

#[tokio::test]
async fn every_single_user_response_has_an_etag_that_moves_with_each_change() {
    let app = app().await;
    let admin = app.admin_session().await;
    let registered = app
        .register(&json!({"name": "Mario", "email": "mario@example.com", "password": PASSWORD}))
        .await;
    registered.assert_status(201);
    let id = registered.json()["id"].as_str().unwrap().to_owned();
    let mut seen = vec![etag(&registered)];
    // Nothing changed since: the same version, by id and as me.
    let (by_id, _) = current(&app, &id, &admin.access_token).await;
    assert_eq!(by_id, seen[0]);
    let created = app
        .create_user(
            &json!({"name": "Luigi", "email": "luigi@example.com", "password": PASSWORD}),
            &admin.access_token,
        )
        .await;
    created.assert_status(201);
    assert_ne!(etag(&created), seen[0]);

    // A login moves last_login_at.
    let user = app.login_session("mario@example.com", PASSWORD).await;
    let me = app.me(&user.access_token).await;
    me.assert_status(200);
    seen.push(etag(&me));
    assert_eq!(current(&app, &id, &admin.access_token).await.0, seen[1]);

    let token = admin.access_token.as_str();
    let path = format!("/api/users/{id}");
    let changes = [
        (
            Method::PATCH,
            path.clone(),
            Some(json!({"name": "Mario Rossi"})),
        ),
        (Method::PUT, path.clone(), Some(json!({"role": "admin"}))),
        (Method::PUT, path.clone(), Some(json!({"role": "user"}))),
        (Method::PUT, format!("{path}/deactivate"), None),
        (Method::PUT, format!("{path}/activate"), None),
        (
            Method::PATCH,
            path.clone(),
            Some(json!({"email_verified": true})),
        ),
    ];
    for (method, path, body) in changes {
        let reply = send(&app, method.clone(), &path, token, None, body.as_ref()).await;
        reply.assert_status(200);
        let tag = etag(&reply);
        assert_eq!(
            current(&app, &id, token).await.0,
            tag,
            "a read after {method} {path} shows the version the write answered"
        );
        seen.push(tag);
    }
    // The user's own writes through /me answer with the ETag too.
    let relogin = app.login_session("mario@example.com", PASSWORD).await;
    seen.push(current(&app, &id, token).await.0);
    let own = send(
        &app,
        Method::PATCH,
        "/api/users/me",
        &relogin.access_token,
        None,
        Some(&json!({"name": "Super Mario"})),
    )
    .await;
    own.assert_status(200);
    seen.push(etag(&own));
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(
        unique.len(),
        seen.len(),
        "every change moved the version: {seen:?}"
    );
    // Unlocking a user who is not locked changes nothing, and says so.
    let unlocked = app.unlock(&id, token).await;
    unlocked.assert_status(200);
    assert_eq!(etag(&unlocked), *seen.last().unwrap());
}

#[tokio::test]
async fn if_none_match_with_the_current_etag_is_304_without_a_body() {
    let app = app().await;
    let (admin, user) = admin_and_user(&app).await;
    let path = format!("/api/users/{}", user.id);
    let (tag, body) = current(&app, &user.id, &admin.access_token).await;
    for (path, token) in [
        (path.as_str(), admin.access_token.as_str()),
        ("/api/users/me", user.access_token.as_str()),
    ] {
        let weak = format!("W/{tag}");
        let listed = format!("\"elsewhere\", {tag}");
        for held in [tag.as_str(), "*", weak.as_str(), listed.as_str()] {
            let reply = send(
                &app,
                Method::GET,
                path,
                token,
                Some(("If-None-Match", held)),
                None,
            )
            .await;
            reply.assert_status(304);
            assert_eq!(reply.text, "", "{held}");
            assert_eq!(etag(&reply), tag, "{held}");
        }
        let stale = send(
            &app,
            Method::GET,
            path,
            token,
            Some(("If-None-Match", "\"0123456789abcdef\"")),
            None,
        )
        .await;
        stale.assert_status(200);
        assert_eq!(stale.json(), body);
        assert_eq!(etag(&stale), tag);
    }
    // After a change, the old tag no longer holds.
    app.patch(&user.id, &json!({"name": "Renamed"}), &admin.access_token)
        .await
        .assert_status(200);
    let after = send(
        &app,
        Method::GET,
        &path,
        &admin.access_token,
        Some(("If-None-Match", &tag)),
        None,
    )
    .await;
    after.assert_status(200);
    assert_eq!(after.json()["name"], "Renamed");
}

/// Every conditional write of a user, by an admin or the user themselves.
fn conditional_writes(id: &str) -> Vec<(Method, String, Option<Value>, bool)> {
    let path = format!("/api/users/{id}");
    vec![
        (
            Method::PUT,
            path.clone(),
            Some(json!({"name": "Put"})),
            true,
        ),
        (
            Method::PATCH,
            path.clone(),
            Some(json!({"name": "Patched"})),
            true,
        ),
        (Method::PUT, format!("{path}/deactivate"), None, true),
        (Method::PUT, format!("{path}/activate"), None, true),
        (Method::PUT, format!("{path}/unlock"), None, true),
        (
            Method::PUT,
            "/api/users/me".into(),
            Some(json!({"name": "Put Me"})),
            false,
        ),
        (
            Method::PATCH,
            "/api/users/me".into(),
            Some(json!({"name": "Patched Me"})),
            false,
        ),
        (Method::DELETE, "/api/users/me".into(), None, false),
        (Method::DELETE, path, None, true),
    ]
}

#[tokio::test]
async fn a_stale_if_match_is_412_and_changes_nothing() {
    let app = app().await;
    let (admin, user) = admin_and_user(&app).await;
    // Locked, so that unlock would change something.
    for _ in 0..3 {
        app.login_email("mario@example.com", "a wrong password here")
            .await;
    }
    let (stale, _) = current(&app, &user.id, &admin.access_token).await;
    app.patch(&user.id, &json!({"name": "Changed"}), &admin.access_token)
        .await
        .assert_status(200);
    let (now_tag, now_body) = current(&app, &user.id, &admin.access_token).await;
    assert!(now_body["locked_until"].is_string(), "{now_body}");
    let weak_current = format!("W/{now_tag}");
    for (method, path, body, by_admin) in conditional_writes(&user.id) {
        let token = if by_admin {
            &admin.access_token
        } else {
            &user.access_token
        };
        for held in [
            stale.as_str(),
            "\"made-up\"",
            "not a tag",
            weak_current.as_str(),
        ] {
            let reply = send(
                &app,
                method.clone(),
                &path,
                token,
                Some(("If-Match", held)),
                body.as_ref(),
            )
            .await;
            let problem = reply.assert_problem(412);
            assert!(
                problem["type"]
                    .as_str()
                    .is_some_and(|t| t.ends_with("precondition-failed")),
                "{problem}"
            );
            let (tag, after) = current(&app, &user.id, &admin.access_token).await;
            assert_eq!(
                (tag.as_str(), &after),
                (now_tag.as_str(), &now_body),
                "{method} {path} with If-Match {held} changed the user"
            );
        }
    }
    // The user's sessions are untouched too: their token still works.
    app.me(&user.access_token).await.assert_status(200);
}

#[tokio::test]
async fn the_current_if_match_or_a_star_lets_every_write_through() {
    let app = app().await;
    let (admin, user) = admin_and_user(&app).await;
    for (i, (method, path, body, by_admin)) in conditional_writes(&user.id).into_iter().enumerate()
    {
        if method == Method::DELETE && path.ends_with("/me") {
            continue; // tried last, on a user of its own
        }
        // A fresh session: deactivation ended the earlier ones.
        let token = if by_admin {
            admin.access_token.clone()
        } else {
            app.login_session("mario@example.com", PASSWORD)
                .await
                .access_token
        };
        let token = &token;
        let (tag, _) = current(&app, &user.id, &admin.access_token).await;
        let held = if i % 2 == 0 { tag } else { "*".to_owned() };
        let reply = send(
            &app,
            method.clone(),
            &path,
            token,
            Some(("If-Match", &held)),
            body.as_ref(),
        )
        .await;
        if method == Method::DELETE {
            reply.assert_status(204);
            app.get_user(&user.id, &admin.access_token)
                .await
                .assert_problem(404);
            // `*` needs a current version: the user is gone.
            let again = send(
                &app,
                Method::DELETE,
                &path,
                token,
                Some(("If-Match", "*")),
                None,
            )
            .await;
            again.assert_problem(404);
        } else {
            reply.assert_status(200);
            assert_eq!(
                current(&app, &user.id, &admin.access_token).await.0,
                etag(&reply)
            );
        }
    }
    let luigi = app.register_and_login("Luigi", "luigi@example.com").await;
    let me = app.me(&luigi.access_token).await;
    let deleted = send(
        &app,
        Method::DELETE,
        "/api/users/me",
        &luigi.access_token,
        Some(("If-Match", &etag(&me))),
        None,
    )
    .await;
    deleted.assert_status(204);
    // Without If-Match, the last write wins as before.
    let bob = app.register_and_login("Bob", "bob@example.com").await;
    app.patch(&bob.id, &json!({"name": "First"}), &admin.access_token)
        .await
        .assert_status(200);
    app.patch(&bob.id, &json!({"name": "Second"}), &bob.access_token)
        .await
        .assert_status(200);
    assert_eq!(
        current(&app, &bob.id, &admin.access_token).await.1["name"],
        "Second"
    );
}

#[tokio::test]
async fn concurrent_patches_with_one_if_match_have_one_winner() {
    let app = app().await;
    let (admin, user) = admin_and_user(&app).await;
    let path = format!("/api/users/{}", user.id);
    for round in 0..10 {
        let (tag, _) = current(&app, &user.id, &admin.access_token).await;
        let first = json!({"name": format!("Admin {round}")});
        let second = json!({"name": format!("Self {round}")});
        let (a, b) = tokio::join!(
            send(
                &app,
                Method::PATCH,
                &path,
                &admin.access_token,
                Some(("If-Match", &tag)),
                Some(&first)
            ),
            send(
                &app,
                Method::PATCH,
                "/api/users/me",
                &user.access_token,
                Some(("If-Match", &tag)),
                Some(&second)
            ),
        );
        let mut statuses = [a.status.as_u16(), b.status.as_u16()];
        statuses.sort_unstable();
        assert_eq!(
            statuses,
            [200, 412],
            "round {round}: {} / {}",
            a.text,
            b.text
        );
        let winner = if a.status == 200 { &a } else { &b };
        let (now, body) = current(&app, &user.id, &admin.access_token).await;
        assert_eq!(now, etag(winner), "round {round}");
        assert_eq!(body["name"], winner.json()["name"], "round {round}");
    }
}
