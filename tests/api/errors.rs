//! Problem documents for malformed requests and unknown routes, and the common headers.

use serde_json::json;

use crate::helpers::{PASSWORD, Reply, spawn_app};

#[tokio::test]
async fn malformed_json_returns_400() {
    let app = spawn_app().await;
    for body in [&b"{"[..], b"{\"name\": }", b"not json", b""] {
        app.post_raw("/api/auth/register", "application/json", body.to_vec())
            .await
            .assert_problem(400);
    }
}

#[tokio::test]
async fn a_repeated_json_key_returns_400_naming_it() {
    let app = spawn_app().await;
    let body = br#"{"email": "a@example.com", "password": "x", "email": "b@example.com"}"#;
    let problem = app
        .post_raw("/api/auth/login", "application/json", body.to_vec())
        .await
        .assert_problem(400);
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains(r#"duplicate key "email""#), "{detail}");
}

#[tokio::test]
async fn json_that_is_not_an_object_returns_422() {
    let app = spawn_app().await;
    app.post_raw("/api/auth/register", "application/json", b"[1,2]".to_vec())
        .await
        .assert_problem(422);
}

#[tokio::test]
async fn wrong_content_type_returns_415() {
    let app = spawn_app().await;
    let body = serde_json::to_vec(&json!({
        "name": "A", "email": "a@example.com", "password": PASSWORD
    }))
    .unwrap();
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/xml",
    ] {
        app.post_raw("/api/auth/register", content_type, body.clone())
            .await
            .assert_problem(415);
    }
    // No content type at all.
    let reply = app
        .client
        .post(app.url("/api/auth/login"))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    crate::helpers::Reply::from(reply).await.assert_problem(415);
    // A charset parameter is fine.
    app.post_raw(
        "/api/auth/register",
        "application/json; charset=utf-8",
        body,
    )
    .await
    .assert_status(201);
}

#[tokio::test]
async fn body_over_64_kib_returns_413() {
    let app = spawn_app().await;
    let mut body = br#"{"name": "A", "email": "a@example.com", "password": "x", "pad": ""#.to_vec();
    body.extend(std::iter::repeat_n(b'a', 64 * 1024));
    body.extend(br#""}"#);
    app.post_raw("/api/auth/register", "application/json", body)
        .await
        .assert_problem(413);
}

#[tokio::test]
async fn body_just_under_64_kib_is_read() {
    let app = spawn_app().await;
    // Valid JSON of almost 64 KiB: it is read and then refused for its unknown field.
    let mut body = br#"{"pad": ""#.to_vec();
    body.extend(std::iter::repeat_n(b'a', 64 * 1024 - 100));
    body.extend(br#""}"#);
    assert!(body.len() < 64 * 1024);
    app.post_raw("/api/auth/register", "application/json", body)
        .await
        .assert_problem(422);
}

#[tokio::test]
async fn unknown_route_returns_404_problem() {
    let app = spawn_app().await;
    for path in ["/nope", "/api/nope", "/api/users/me/extra"] {
        let reply = app.get(path, None).await;
        reply.assert_problem(404);
        assert!(reply.header("x-request-id").is_some());
    }
    app.post_json("/api/auth/nope", &json!({}), None)
        .await
        .assert_problem(404);
}

#[tokio::test]
async fn error_responses_carry_the_common_headers() {
    let app = spawn_app().await;
    let reply = app.get("/api/users/me", None).await;
    reply.assert_problem(401);
    assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    assert_eq!(reply.header("x-content-type-options"), Some("nosniff"));
    assert!(
        reply
            .header("x-request-id")
            .is_some_and(|id| !id.is_empty())
    );
}

#[tokio::test]
async fn every_request_gets_its_own_request_id() {
    let app = spawn_app().await;
    let a = app.health().await;
    let b = app.health().await;
    assert_ne!(a.header("x-request-id"), b.header("x-request-id"));
}

#[tokio::test]
async fn validation_errors_list_every_field_with_a_message() {
    let app = spawn_app().await;
    let body = app
        .register(&json!({"email": "bad"}))
        .await
        .assert_invalid_fields(&["name", "email", "password"]);
    assert_eq!(body["title"], "Unprocessable Entity");
}

/// A value of the wrong type does not hide the other fields' errors: each is named once,
/// beside what is wrong with the rest.
#[tokio::test]
async fn fields_of_the_wrong_type_are_listed_with_every_other_bad_field() {
    let app = spawn_app().await;
    let body = app
        .register(&json!({"name": 1, "email": 2, "password": 3}))
        .await
        .assert_invalid_fields(&["name", "email", "password"]);
    for error in body["errors"].as_array().unwrap() {
        assert_eq!(error["message"], "must be a string", "{body}");
    }
    let body = app
        .register(&json!({"name": 1, "email": "bad", "password": "short", "extra": true}))
        .await
        .assert_invalid_fields(&["name", "email", "password", "extra"]);
    let message = |field: &str| {
        body["errors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["field"] == field)
            .map(|e| e["message"].as_str().unwrap().to_owned())
            .unwrap()
    };
    assert_eq!(message("name"), "must be a string");
    assert_ne!(message("email"), "must be a string");
    assert_ne!(message("password"), "must be a string");
    // A PATCH's field of the wrong type, beside one that is fine, changes nothing.
    let token = app.admin_token().await;
    let reply = app
        .client
        .patch(app.url("/api/users/me"))
        .bearer_auth(&token)
        .json(&json!({"name": "New Name", "username": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 422);
    let me = app.me(&token).await.json();
    assert_ne!(me["name"], "New Name", "{me}");
}

#[tokio::test]
async fn cors_preflight_is_answered_for_a_configured_origin() {
    let app = crate::helpers::spawn_app_with(&[("CORS_ORIGINS", "https://app.example.com")]).await;
    let reply = app
        .client
        .request(reqwest::Method::OPTIONS, app.url("/api/auth/login"))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    assert!(reply.status().is_success(), "{}", reply.status());
    assert_eq!(
        reply.headers().get("access-control-allow-origin").unwrap(),
        "https://app.example.com"
    );
    // The headers of versions and retries may be sent, and read back.
    for (method, path, headers) in [
        (
            "PATCH",
            "/api/users/me",
            "authorization, content-type, if-match",
        ),
        ("GET", "/api/users/me", "authorization, if-none-match"),
        (
            "POST",
            "/api/users",
            "authorization, content-type, idempotency-key",
        ),
    ] {
        let reply = app
            .client
            .request(reqwest::Method::OPTIONS, app.url(path))
            .header("origin", "https://app.example.com")
            .header("access-control-request-method", method)
            .header("access-control-request-headers", headers)
            .send()
            .await
            .unwrap();
        assert!(
            reply.status().is_success(),
            "{method} {path}: {}",
            reply.status()
        );
    }
    // HEAD goes through CORS as GET does (the method is changed in place behind it).
    let token = app.admin_token().await;
    for method in [reqwest::Method::GET, reqwest::Method::HEAD] {
        let reply = app
            .client
            .request(method.clone(), app.url("/api/users/me"))
            .bearer_auth(&token)
            .header("origin", "https://app.example.com")
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 200, "{method}");
        assert_eq!(
            reply.headers().get("access-control-allow-origin").unwrap(),
            "https://app.example.com"
        );
        let exposed = reply
            .headers()
            .get("access-control-expose-headers")
            .unwrap()
            .to_str()
            .unwrap()
            .to_ascii_lowercase();
        for header in ["etag", "idempotent-replayed", "location", "retry-after"] {
            assert!(exposed.contains(header), "{method} {header}: {exposed}");
        }
    }
    // Another origin gets no CORS grant.
    let reply = app
        .client
        .get(app.url("/health"))
        .header("origin", "https://evil.example.com")
        .send()
        .await
        .unwrap();
    assert!(reply.headers().get("access-control-allow-origin").is_none());
    // Its preflight, or one asking for a header not allowed, is refused with a problem
    // document, as every error is.
    for (origin, headers) in [
        ("https://evil.example.com", "content-type"),
        ("https://app.example.com", "x-not-allowed"),
    ] {
        let reply = app
            .client
            .request(reqwest::Method::OPTIONS, app.url("/api/auth/login"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", headers)
            .send()
            .await
            .unwrap();
        let problem = Reply::from(reply).await.assert_problem(400);
        assert!(
            problem["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{problem}"
        );
    }
}
