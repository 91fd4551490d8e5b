//! The web pages: each sends its Content-Security-Policy and loads nothing from another
//! origin; the web session endpoints set their cookie as promised and refuse requests that
//! another site made a browser send.

use std::collections::BTreeSet;

use regex::Regex;
use serde_json::{Value, json};

use crate::{
    helpers::{ADMIN_EMAIL, ADMIN_PASSWORD, PASSWORD, Reply, TestApp, spawn_app, spawn_app_with},
    mfa::{code_at, enable_mfa},
};

const PAGES: &[&str] = &[
    "/account",
    "/admin",
    "/sign-in",
    "/reset-password?token=abc",
    "/verify-email?token=abc",
];

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
     base-uri 'none'";

const COOKIE: &str = "user_service_session";

#[track_caller]
fn assert_page_headers(reply: &Reply, path: &str) {
    assert_eq!(reply.header("content-security-policy"), Some(CSP), "{path}");
    assert_eq!(
        reply.header("referrer-policy"),
        Some("no-referrer"),
        "{path}"
    );
    assert_eq!(reply.header("x-frame-options"), Some("DENY"), "{path}");
    assert_eq!(
        reply.header("x-content-type-options"),
        Some("nosniff"),
        "{path}"
    );
    assert!(reply.header("etag").is_some(), "{path}");
    assert_eq!(reply.header("cache-control"), Some("no-cache"), "{path}");
}

/// Every URL an HTML page or a stylesheet names: `src`, `href`, `action`, CSS `url()`.
fn urls_in(text: &str) -> Vec<String> {
    let attributes =
        Regex::new(r#"(?i)\b(?:src|href|action|srcset|poster|data)\s*=\s*["']([^"']*)["']"#)
            .unwrap();
    let css = Regex::new(r#"url\(\s*["']?([^"')]*)"#).unwrap();
    attributes
        .captures_iter(text)
        .chain(css.captures_iter(text))
        .map(|c| c[1].to_owned())
        .collect()
}

/// The modules a script imports (`from './x.js'`, `import('./x.js')`).
fn imports_in(script: &str) -> Vec<String> {
    let imports =
        Regex::new(r#"(?m)(?:\bfrom\s+|^\s*import\s+|\bimport\s*\(\s*)["']([^"']+)["']"#).unwrap();
    imports
        .captures_iter(script)
        .map(|c| c[1].to_owned())
        .collect()
}

/// A path of this service: absolute without a host, or relative to /assets/.
fn local_path(url: &str, base: &str) -> Option<String> {
    if url.starts_with('#') || url.is_empty() {
        return None;
    }
    assert!(
        !url.contains("//") && !url.contains(':'),
        "{url:?} (in {base}) names another origin or a scheme"
    );
    Some(match url.strip_prefix("./") {
        Some(name) => format!("/assets/{name}"),
        None if url.starts_with('/') => url.split(['?', '#']).next().unwrap().to_owned(),
        None => panic!("{url:?} (in {base}) is neither absolute nor ./relative"),
    })
}

#[tokio::test]
async fn every_page_sends_its_csp_and_security_headers() {
    let app = spawn_app().await;
    for path in PAGES {
        let reply = app.get(path, None).await;
        reply.assert_status(200);
        assert_eq!(
            reply.header("content-type"),
            Some("text/html; charset=utf-8"),
            "{path}"
        );
        assert_page_headers(&reply, path);
        assert!(reply.text.starts_with("<!doctype html>"), "{path}");
        assert!(reply.text.contains("<html lang=\"en\">"), "{path}");
    }
}

#[tokio::test]
async fn no_page_loads_anything_from_another_origin_or_inline() {
    let app = spawn_app().await;
    let inline_script = Regex::new(r"(?is)<script(?:[^>]*)>\s*[^<\s]").unwrap();
    let script_tag = Regex::new(r"(?i)<script[^>]*>").unwrap();
    let handler_attribute = Regex::new(r#"(?i)\son[a-z]+\s*="#).unwrap();
    let style_attribute = Regex::new(r#"(?i)\sstyle\s*="#).unwrap();

    let mut to_check: Vec<String> = PAGES.iter().map(|p| (*p).to_owned()).collect();
    let mut seen = BTreeSet::new();
    while let Some(path) = to_check.pop() {
        if !seen.insert(path.clone()) {
            continue;
        }
        let reply = app.get(&path, None).await;
        reply.assert_status(200);
        assert_page_headers(&reply, &path);
        let content_type = reply.header("content-type").unwrap_or_default().to_owned();
        let found = if content_type.starts_with("text/html") {
            assert!(
                !inline_script.is_match(&reply.text),
                "inline script in {path}"
            );
            for tag in script_tag.find_iter(&reply.text) {
                assert!(
                    tag.as_str().contains(" src=\"/"),
                    "{path}: {}",
                    tag.as_str()
                );
            }
            assert!(!handler_attribute.is_match(&reply.text), "on*= in {path}");
            assert!(!style_attribute.is_match(&reply.text), "style= in {path}");
            assert!(!reply.text.contains("<style"), "<style> in {path}");
            urls_in(&reply.text)
        } else if content_type.starts_with("text/javascript") {
            assert!(
                !reply.text.contains("http://") && !reply.text.contains("https://"),
                "{path} names another origin"
            );
            // Tokens stay in memory: no storage a script (or an injected one) could read.
            for storage in [
                "localStorage.",
                "sessionStorage.",
                "indexedDB.",
                "document.cookie",
            ] {
                assert!(!reply.text.contains(storage), "{path} uses {storage}");
            }
            assert!(!reply.text.contains("innerHTML"), "{path}");
            imports_in(&reply.text)
        } else if content_type.starts_with("text/css") {
            assert!(!reply.text.contains("@import"), "{path}");
            urls_in(&reply.text)
        } else {
            assert_eq!(content_type, "image/svg+xml", "{path}");
            Vec::new()
        };
        to_check.extend(
            found
                .iter()
                .filter_map(|url| local_path(url, &path))
                .filter(
                    // Links between the pages themselves are checked as pages.
                    |p| p.starts_with("/assets/"),
                ),
        );
    }
    // The pages, their scripts (with what they import), the stylesheet and the icon.
    for asset in [
        "/assets/app.css",
        "/assets/api.js",
        "/assets/ui.js",
        "/assets/admin.js",
        "/assets/favicon.svg",
    ] {
        assert!(seen.contains(asset), "{asset} was not reached: {seen:?}");
    }
}

#[tokio::test]
async fn assets_have_their_types_and_answer_304_when_unchanged() {
    let app = spawn_app().await;
    let css = app.get("/assets/app.css", None).await;
    css.assert_status(200);
    assert_eq!(css.header("content-type"), Some("text/css; charset=utf-8"));
    let js = app.get("/assets/api.js", None).await;
    assert_eq!(
        js.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    let etag = css.header("etag").unwrap();
    let again = app
        .client
        .get(app.url("/assets/app.css"))
        .header("If-None-Match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    assert_eq!(again.headers()["etag"], etag);
    // If-None-Match compares weakly, in a list, as for users; another tag is no match.
    for (held, status) in [
        (format!("\"other\", W/{etag}"), 304),
        ("\"other\"".to_owned(), 200),
    ] {
        let answer = app
            .client
            .get(app.url("/assets/app.css"))
            .header("If-None-Match", held.as_str())
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), status, "{held}");
    }
}

#[tokio::test]
async fn the_root_leads_to_the_account_page() {
    let app = spawn_app().await;
    let root = app.get("/", None).await;
    assert_eq!(root.status, 302);
    assert_eq!(root.header("location"), Some("/account"));
    let head = app.client.head(app.url("/")).send().await.unwrap();
    assert_eq!(head.status(), 302);
    let post = app.post_raw("/", "text/plain", Vec::new()).await;
    post.assert_problem(405);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
}

#[tokio::test]
async fn pages_take_get_only_and_unknown_assets_are_404() {
    let app = spawn_app().await;
    let post = app.post_raw("/account", "text/plain", Vec::new()).await;
    post.assert_problem(405);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
    let head = app.client.head(app.url("/admin")).send().await.unwrap();
    assert_eq!(head.status(), 200);
    app.get("/assets/nothing.js", None)
        .await
        .assert_problem(404);
    app.get("/assets/../Cargo.toml", None)
        .await
        .assert_problem(404);
    let get = app.get("/web/session", None).await;
    get.assert_problem(405);
    assert_eq!(get.header("allow"), Some("POST"));
}

#[tokio::test]
async fn the_web_endpoints_are_not_in_the_openapi_document() {
    let app = spawn_app().await;
    let document = app.get("/api/openapi.json", None).await.json();
    let paths = document["paths"].as_object().unwrap();
    assert!(paths.contains_key("/api/auth/login"));
    for path in paths.keys() {
        assert!(!path.starts_with("/web"), "{path}");
        assert!(
            !PAGES.iter().any(|page| page.starts_with(path.as_str())),
            "{path}"
        );
    }
}

// --- the web session ---

/// A POST as the service's own pages send it: JSON, from our origin.
async fn web_post(app: &TestApp, path: &str, body: &Value, cookie: Option<&str>) -> Reply {
    let mut request = app
        .client
        .post(app.url(path))
        .header("Origin", &app.address)
        .header("Sec-Fetch-Site", "same-origin")
        .json(body);
    if let Some(cookie) = cookie {
        request = request.header("Cookie", format!("{COOKIE}={cookie}"));
    }
    Reply::from(request.send().await.unwrap()).await
}

/// The session cookie a response sets: its value and its attributes, lower-cased.
fn set_cookie(reply: &Reply) -> (String, BTreeSet<String>) {
    let header = reply
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|v| v.starts_with(&format!("{COOKIE}=")))
        .unwrap_or_else(|| panic!("no session cookie: {:?}", reply.headers));
    let mut parts = header.split(';').map(str::trim);
    let value = parts.next().unwrap()[COOKIE.len() + 1..].to_owned();
    (value, parts.map(str::to_ascii_lowercase).collect())
}

/// Asks for an access token with the session cookie, as a page does when it loads.
async fn token_for(app: &TestApp, cookie: Option<&str>) -> Reply {
    web_post(app, "/web/session/token", &json!({}), cookie).await
}

/// Signs in through the pages' endpoint; the answer, asserted 200.
async fn sign_in_reply(app: &TestApp, email: &str, password: &str) -> Reply {
    let reply = web_post(
        app,
        "/web/session",
        &json!({"email": email, "password": password}),
        None,
    )
    .await;
    reply.assert_status(200);
    reply
}

/// Signs in through the pages' endpoint: the body and the session cookie.
async fn sign_in(app: &TestApp, email: &str, password: &str) -> (Value, String) {
    let reply = sign_in_reply(app, email, password).await;
    let (cookie, _) = set_cookie(&reply);
    (reply.json(), cookie)
}

#[tokio::test]
async fn signing_in_sets_an_http_only_strict_cookie_and_returns_only_the_access_token() {
    let app = spawn_app().await;
    let reply = sign_in_reply(&app, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let body = reply.json();
    assert!(body.get("refresh_token").is_none(), "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    let token = body["access_token"].as_str().unwrap();
    app.me(token).await.assert_status(200);
    assert_eq!(reply.header("cache-control"), Some("no-store"));

    let (value, attributes) = set_cookie(&reply);
    assert!(value.len() >= 43, "{value}");
    for expected in ["httponly", "samesite=strict", "path=/web/session"] {
        assert!(attributes.contains(expected), "{expected}: {attributes:?}");
    }
    assert!(
        attributes.contains(&format!("max-age={}", 14 * 24 * 3600)),
        "{attributes:?}"
    );
    // Plain HTTP in development: a Secure cookie would never come back.
    assert!(!attributes.contains("secure"), "{attributes:?}");
    // The cookie is the refresh token itself: the API accepts it.
    app.refresh(&value).await.assert_status(200);
}

#[tokio::test]
async fn outside_development_the_cookie_is_secure() {
    let secret = "a production secret of at least 32 bytes";
    let app = spawn_app_with(&[("APP_ENV", "production"), ("JWT_SECRET", secret)]).await;
    let reply = sign_in_reply(&app, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let (_, attributes) = set_cookie(&reply);
    assert!(attributes.contains("secure"), "{attributes:?}");
}

#[tokio::test]
async fn the_cookie_gives_access_tokens_without_being_rotated() {
    let app = spawn_app().await;
    let (_, cookie) = sign_in(&app, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    // Two tabs, each loading a page: both get a token, and the cookie stays good.
    for _ in 0..3 {
        let reply = token_for(&app, Some(&cookie)).await;
        reply.assert_status(200);
        assert!(reply.headers.get("set-cookie").is_none());
        let body = reply.json();
        assert!(body.get("refresh_token").is_none(), "{body}");
        let me = app.me(body["access_token"].as_str().unwrap()).await;
        me.assert_status(200);
        assert_eq!(me.json()["email"], ADMIN_EMAIL);
    }
    // One session, not four.
    let token = app.admin_token().await;
    let sessions = app.get("/api/users/me/sessions", Some(&token)).await.json();
    assert_eq!(sessions["items"].as_array().unwrap().len(), 2);
}

/// A page asks for a token on every load: without a cookie that is no failure (204, no
/// body, nothing logged in the browser's console), and a cookie whose session is over is
/// refused and removed, so that the next load does not ask with it again.
#[tokio::test]
async fn a_token_is_refused_without_a_live_cookie() {
    let app = spawn_app().await;
    let none = token_for(&app, None).await;
    none.assert_status(204);
    assert!(none.text.is_empty(), "{:?}", none.text);
    assert!(none.headers.get("set-cookie").is_none());
    let refused_and_cleared = |reply: Reply| {
        reply.assert_problem(401);
        let (value, attributes) = set_cookie(&reply);
        assert_eq!(value, "");
        assert!(attributes.contains("max-age=0"), "{attributes:?}");
        assert!(attributes.contains("path=/web/session"), "{attributes:?}");
    };
    refused_and_cleared(token_for(&app, Some("forged")).await);
    // A session ended elsewhere (here: signing out everywhere through the API).
    let (body, cookie) = sign_in(&app, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let token = body["access_token"].as_str().unwrap();
    let ended = app
        .client
        .delete(app.url("/api/users/me/sessions"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(ended.status(), 204);
    refused_and_cleared(token_for(&app, Some(&cookie)).await);
}

#[tokio::test]
async fn signing_out_ends_the_session_and_clears_the_cookie() {
    let app = spawn_app().await;
    let (body, cookie) = sign_in(&app, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let reply = web_post(&app, "/web/session/logout", &json!({}), Some(&cookie)).await;
    reply.assert_status(204);
    let (value, attributes) = set_cookie(&reply);
    assert_eq!(value, "");
    assert!(attributes.contains("max-age=0"), "{attributes:?}");
    assert!(attributes.contains("path=/web/session"), "{attributes:?}");
    token_for(&app, Some(&cookie)).await.assert_problem(401);
    // Its access token is refused at once.
    app.me(body["access_token"].as_str().unwrap())
        .await
        .assert_problem(401);
    // Without a cookie there is nothing to end: still 204.
    web_post(&app, "/web/session/logout", &json!({}), None)
        .await
        .assert_status(204);
}

#[tokio::test]
async fn signing_in_with_mfa_on_takes_the_code_step() {
    let app = spawn_app().await;
    let session = app
        .register_and_login("Mario Rossi", "mario@example.com")
        .await;
    let enrolled = enable_mfa(&app, &session).await;
    let first = web_post(
        &app,
        "/web/session",
        &json!({"email": "mario@example.com", "password": PASSWORD}),
        None,
    )
    .await;
    first.assert_status(200);
    assert!(first.headers.get("set-cookie").is_none());
    let body = first.json();
    assert_eq!(body["mfa_required"], true);
    assert!(body.get("access_token").is_none(), "{body}");
    let mfa_token = body["mfa_token"].as_str().unwrap();

    let wrong = web_post(
        &app,
        "/web/session/mfa",
        &json!({"mfa_token": mfa_token, "code": "000000x"}),
        None,
    )
    .await;
    wrong.assert_problem(401);
    let second = web_post(
        &app,
        "/web/session/mfa",
        &json!({"mfa_token": mfa_token, "code": code_at(&enrolled.totp, 1)}),
        None,
    )
    .await;
    second.assert_status(200);
    let (cookie, _) = set_cookie(&second);
    assert!(second.json().get("refresh_token").is_none());
    token_for(&app, Some(&cookie)).await.assert_status(200);
}

#[tokio::test]
async fn requests_another_site_made_are_refused() {
    let app = spawn_app().await;
    let (_, cookie) = sign_in(&app, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let login = json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD});
    for (path, body) in [
        ("/web/session", &login),
        ("/web/session/token", &json!({})),
        ("/web/session/logout", &json!({})),
    ] {
        let send = |origin: Option<&str>, site: Option<&str>| {
            let mut request = app
                .client
                .post(app.url(path))
                .header("Cookie", format!("{COOKIE}={cookie}"))
                .json(body);
            if let Some(origin) = origin {
                request = request.header("Origin", origin);
            }
            if let Some(site) = site {
                request = request.header("Sec-Fetch-Site", site);
            }
            async move { Reply::from(request.send().await.unwrap()).await }
        };
        let own = app.address.as_str();
        for (origin, site) in [
            (None, None),
            (Some("https://evil.example.com"), None),
            (Some("http://127.0.0.1:1"), None),
            (Some("null"), None),
            (Some(own), Some("cross-site")),
            (Some(own), Some("same-site")),
            (None, Some("same-origin")),
        ] {
            let reply = send(origin, site).await;
            let problem = reply.assert_problem(403);
            assert!(
                problem["detail"].as_str().unwrap().contains("own pages"),
                "{path} {origin:?} {site:?}: {problem}"
            );
            assert!(reply.headers.get("set-cookie").is_none(), "{path}");
        }
        // A form another site posts cannot be JSON without a preflight.
        let form = app
            .client
            .post(app.url(path))
            .header("Origin", own)
            .header("Cookie", format!("{COOKIE}={cookie}"))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body("email=x")
            .send()
            .await
            .unwrap();
        assert_eq!(form.status(), 415, "{path}");
    }
    // None of that ended the session.
    token_for(&app, Some(&cookie)).await.assert_status(200);
}

#[tokio::test]
async fn the_qr_code_is_svg_for_signed_in_users_only() {
    let app = spawn_app().await;
    let url = json!({"text": "otpauth://totp/user-service:a@example.com?secret=JBSWY3DPEHPK3PXP&issuer=user-service"});
    let anonymous = app.post_json("/web/qr", &url, None).await;
    anonymous.assert_problem(401);
    let token = app.admin_token().await;
    let reply = app.post_json("/web/qr", &url, Some(&token)).await;
    reply.assert_status(200);
    assert_eq!(reply.header("content-type"), Some("image/svg+xml"));
    assert!(reply.text.contains("<svg"), "{}", reply.text);
    assert!(!reply.text.contains("<script"));
    app.post_json("/web/qr", &json!({"text": ""}), Some(&token))
        .await
        .assert_invalid_fields(&["text"]);
    app.post_json("/web/qr", &json!({"text": "x".repeat(513)}), Some(&token))
        .await
        .assert_invalid_fields(&["text"]);
}
