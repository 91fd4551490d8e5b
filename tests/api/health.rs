use serde_json::json;

use crate::helpers::{Reply, spawn_app};

#[tokio::test]
async fn health_returns_200_ok() {
    let app = spawn_app().await;
    let reply = app.health().await;
    reply.assert_status(200);
    assert_eq!(reply.json(), json!({"status": "ok"}));
    assert!(
        reply
            .header("content-type")
            .is_some_and(|ct| ct.starts_with("application/json")),
        "{:?}",
        reply.headers
    );
    assert!(reply.header("x-request-id").is_some());
    assert_eq!(reply.header("x-content-type-options"), Some("nosniff"));
}

#[tokio::test]
async fn ready_returns_200_when_the_database_answers() {
    let app = spawn_app().await;
    let reply = app.ready().await;
    reply.assert_status(200);
    assert!(reply.json().is_object());
}

#[tokio::test]
async fn metrics_exposes_prometheus_text_with_requests_and_latency() {
    let app = spawn_app().await;
    app.health().await.assert_status(200);
    app.get("/api/users/me", None).await.assert_status(401);
    let reply = app.get("/metrics", None).await;
    reply.assert_status(200);
    assert!(
        reply
            .header("content-type")
            .is_some_and(|ct| ct.starts_with("text/plain")),
        "{:?}",
        reply.headers
    );
    assert!(reply.text.contains("http_requests_total"), "{}", reply.text);
    assert!(
        reply.text.contains("http_request_duration_seconds"),
        "{}",
        reply.text
    );
    assert!(reply.text.contains("status=\"401\""), "{}", reply.text);
}

#[tokio::test]
async fn metrics_count_routes_by_pattern_logins_by_outcome_and_database_errors() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let id = "65f0c1e2a4b5c6d7e8f90123";
    app.get_user(id, &admin).await.assert_status(404);
    app.login_email("nobody@example.com", "wrong password")
        .await
        .assert_status(401);
    let text = app.get("/metrics", None).await.text;
    assert!(
        text.contains("route=\"/api/users/{id}\",status=\"404\""),
        "{text}"
    );
    assert!(!text.contains(id), "a raw path became a label: {text}");
    let count = |series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series} in {text}"))
    };
    assert!(count("user_service_logins_total{outcome=\"failure\"}") >= 1.0);
    assert!(count("user_service_logins_total{outcome=\"success\"}") >= 1.0);
    count("user_service_database_errors_total{kind=\"unavailable\"}");
    count("user_service_rate_limited_total");
}

#[tokio::test]
async fn openapi_document_lists_every_route() {
    let app = spawn_app().await;
    let reply = app.get("/api/openapi.json", None).await;
    reply.assert_status(200);
    let doc = reply.json();
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "{doc}"
    );
    let paths = doc["paths"].as_object().expect("paths");
    for path in [
        "/api/auth/register",
        "/api/auth/login",
        "/api/auth/refresh",
        "/api/auth/logout",
        "/api/auth/forgot-password",
        "/api/auth/reset-password",
        "/api/users",
        "/api/users/me",
        "/api/users/{id}",
        "/api/users/{id}/activate",
        "/api/users/{id}/deactivate",
        "/health",
        "/ready",
        "/metrics",
    ] {
        assert!(
            paths.contains_key(path),
            "missing {path} in the OpenAPI paths"
        );
    }
    // Every operation but the probes' may be rate limited, and says so.
    for (path, item) in paths {
        let probe = ["/health", "/ready", "/metrics"].contains(&path.as_str());
        for (method, operation) in item.as_object().unwrap() {
            let limited = operation["responses"].get("429").is_some();
            assert_eq!(limited, !probe, "{method} {path}: 429 listed: {limited}");
        }
    }
}

#[tokio::test]
async fn docs_page_is_served_as_html() {
    let app = spawn_app().await;
    let mut reply = app.get("/docs", None).await;
    // A redirect (to /docs/) is fine: a browser follows it.
    for _ in 0..3 {
        if !reply.status.is_redirection() {
            break;
        }
        let location = reply
            .header("location")
            .expect("a redirect with Location")
            .to_owned();
        let path = location
            .strip_prefix(&app.address)
            .unwrap_or(&location)
            .to_owned();
        reply = app.get(&path, None).await;
    }
    reply.assert_status(200);
    assert!(
        reply
            .header("content-type")
            .is_some_and(|ct| ct.starts_with("text/html")),
        "{:?}",
        reply.headers
    );
    assert!(
        reply.text.to_ascii_lowercase().contains("<html"),
        "{}",
        reply.text
    );
}

#[tokio::test]
async fn head_answers_as_get_does_without_the_body() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    for (path, token) in [
        ("/health", None),
        ("/ready", None),
        ("/api/openapi.json", None),
        ("/api/users/me", Some(admin.as_str())),
        ("/api/users?per_page=5", Some(admin.as_str())),
    ] {
        let get = app.get(path, token).await;
        get.assert_status(200);
        let head = app.head(path, token).await;
        head.assert_status(200);
        assert_eq!(head.text, "", "{path}");
        let length = get.text.len().to_string();
        assert_eq!(
            head.header("content-length"),
            Some(length.as_str()),
            "{path}"
        );
        assert_eq!(
            head.header("content-type"),
            get.header("content-type"),
            "{path}"
        );
        assert_eq!(head.header("etag"), get.header("etag"), "{path}");
    }
    // Its conditional form too, and a route that takes no GET still refuses it.
    let etag = app.me(&admin).await.header("etag").unwrap().to_owned();
    let conditional = app
        .client
        .head(app.url("/api/users/me"))
        .bearer_auth(&admin)
        .header("if-none-match", etag);
    Reply::from(conditional.send().await.unwrap())
        .await
        .assert_status(304);
    let head = app.head("/api/auth/login", None).await;
    head.assert_status(405);
    assert_eq!(head.header("allow"), Some("POST"));
    app.head("/api/users/me", None).await.assert_status(401);
    // Counted as HEAD.
    let metrics = app.get("/metrics", None).await.text;
    assert!(
        metrics.contains(r#"method="HEAD",route="/api/users/me",status="200""#),
        "{metrics}"
    );
    // And a 405 lists it beside GET.
    let delete = app
        .client
        .delete(app.url("/api/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), 405);
    assert_eq!(delete.headers()["allow"], "GET, HEAD");
}
