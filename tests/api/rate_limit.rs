//! Per-client rate limiting of every path but the probes (`/health`, `/ready`, `/metrics`).

use std::time::Instant;

use crate::helpers::spawn_app_with;

#[tokio::test]
async fn api_is_rate_limited_with_retry_after_and_health_is_exempt() {
    let app = spawn_app_with(&[("RATE_LIMIT_PER_SECOND", "30"), ("RATE_LIMIT_BURST", "30")]).await;

    let started = Instant::now();
    let mut replies = Vec::with_capacity(100);
    for _ in 0..100 {
        replies.push(app.get("/api/users/me", None).await);
    }
    let elapsed = started.elapsed().as_secs_f64();

    let successes = replies.iter().filter(|r| r.status.as_u16() != 429).count();
    let limited: Vec<_> = replies
        .iter()
        .filter(|r| r.status.as_u16() == 429)
        .collect();
    let allowed = 30.0 + 30.0 * elapsed + 1.0;
    assert!(
        successes as f64 <= allowed,
        "{successes} requests got through in {elapsed:.3} s; at most {allowed:.1} may"
    );
    assert!(successes >= 1, "nothing got through");
    if elapsed < 2.0 {
        // 100 requests in under 2 s are more than 30 + 30/s allow.
        assert!(!limited.is_empty(), "nothing was limited in {elapsed:.3} s");
    }
    for reply in &replies {
        if reply.status.as_u16() != 429 {
            reply.assert_problem(401);
        }
    }
    for reply in limited {
        let body = reply.assert_problem(429);
        let retry_after: u64 = reply
            .header("retry-after")
            .expect("429 without Retry-After")
            .parse()
            .expect("Retry-After in whole seconds");
        assert!(retry_after >= 1, "Retry-After: {retry_after}");
        assert_eq!(reply.header("cache-control"), Some("no-store"));
        assert_eq!(body["status"], 429);
        assert!(reply.header("x-request-id").is_some());
    }

    // While /api is limited, the operational routes answer.
    let mut limited_now = false;
    for _ in 0..200 {
        if app.get("/api/users/me", None).await.status.as_u16() == 429 {
            limited_now = true;
            break;
        }
    }
    assert!(limited_now, "/api was never limited");
    // So is everything else but the probes: the key set, the documents, the pages, and
    // paths that lead nowhere.
    for path in [
        "/.well-known/jwks.json",
        "/api/openapi.json",
        "/docs/",
        "/sign-in",
        "/nope",
    ] {
        let mut limited_there = false;
        for _ in 0..100 {
            if app.get(path, None).await.status.as_u16() == 429 {
                limited_there = true;
                break;
            }
        }
        assert!(limited_there, "{path} was never limited");
    }
    for _ in 0..40 {
        app.health().await.assert_status(200);
    }
    app.ready().await.assert_status(200);
    let metrics = app.get("/metrics", None).await;
    metrics.assert_status(200);
    let refused: f64 = metrics
        .text
        .lines()
        .find_map(|l| {
            l.strip_prefix("user_service_rate_limited_total ")?
                .parse()
                .ok()
        })
        .expect("the rate-limit counter");
    assert!(refused >= 1.0, "{}", metrics.text);
}

#[tokio::test]
async fn x_forwarded_for_is_ignored_from_untrusted_peers() {
    let app = spawn_app_with(&[("RATE_LIMIT_PER_SECOND", "1"), ("RATE_LIMIT_BURST", "2")]).await;
    let mut statuses = Vec::new();
    for i in 0..4 {
        let reply = app
            .client
            .get(app.url("/api/users/me"))
            .header("x-forwarded-for", format!("203.0.113.{i}"))
            .send()
            .await
            .unwrap();
        statuses.push(reply.status().as_u16());
    }
    // Every request counts against the socket peer, whatever it claims.
    assert_eq!(&statuses[..2], [401, 401], "{statuses:?}");
    assert!(statuses[2..].contains(&429), "{statuses:?}");
}

#[tokio::test]
async fn x_forwarded_for_names_the_client_behind_a_trusted_proxy() {
    let app = spawn_app_with(&[
        ("RATE_LIMIT_PER_SECOND", "1"),
        ("RATE_LIMIT_BURST", "2"),
        ("TRUSTED_PROXIES", "127.0.0.1"),
    ])
    .await;
    let send = |client_ip: &'static str| {
        let app = &app;
        async move {
            app.client
                .get(app.url("/api/users/me"))
                .header("x-forwarded-for", client_ip)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let mut first = Vec::new();
    for _ in 0..4 {
        first.push(send("203.0.113.1").await);
    }
    assert!(first.contains(&429), "{first:?}");
    // Another client behind the same proxy has its own quota.
    assert_eq!(send("203.0.113.2").await, 401);
    assert_eq!(send("203.0.113.2").await, 401);
}

#[tokio::test]
async fn rate_limit_counts_failed_logins_too() {
    let app = spawn_app_with(&[("RATE_LIMIT_PER_SECOND", "1"), ("RATE_LIMIT_BURST", "3")]).await;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(
            app.post_raw("/api/auth/login", "application/json", b"{".to_vec())
                .await
                .status
                .as_u16(),
        );
    }
    assert_eq!(&statuses[..3], [400, 400, 400], "{statuses:?}");
    assert!(statuses[3..].contains(&429), "{statuses:?}");
}

#[tokio::test]
async fn zero_turns_the_limit_off() {
    let app = spawn_app_with(&[("RATE_LIMIT_PER_SECOND", "0")]).await;
    for _ in 0..100 {
        app.get("/api/users/me", None).await.assert_problem(401);
    }
}
