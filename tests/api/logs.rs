//! The logs of a whole register-login-refresh-reset flow, captured as JSON lines: every line
//! parses, requests are logged with their id, route, status and latency, and no password,
//! token or hash appears anywhere.

use std::sync::{Mutex, OnceLock};

use serde_json::{Value, json};
use tracing_subscriber::{EnvFilter, fmt::MakeWriter};

use crate::helpers::{reset_token_from_mail, spawn_app_with, start_smtp_server};

/// Everything every test of this binary logs from the moment the first caller installs it.
static CAPTURED: Mutex<Vec<u8>> = Mutex::new(Vec::new());

#[derive(Clone, Copy)]
struct Capture;

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        CAPTURED.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Self::Writer {
        Capture
    }
}

/// The service's JSON format (as `LOG_FORMAT=json` sets it), debug level for our crate.
fn capture_logs() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_env_filter(EnvFilter::new("info,user_service=debug"))
            .with_writer(Capture)
            .init();
    });
}

fn captured_lines() -> Vec<String> {
    String::from_utf8(CAPTURED.lock().unwrap().clone())
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn no_password_token_or_hash_reaches_the_logs() {
    capture_logs();
    let (smtp_port, mailbox) = start_smtp_server();
    let smtp_url = format!("smtp://127.0.0.1:{smtp_port}");
    let app = spawn_app_with(&[("SMTP_URL", &smtp_url)]).await;
    let password = "log test first password";
    let new_password = "log test second password";
    let email = "log.watcher@example.com";

    app.register(&json!({"name": "Log Watcher", "email": email, "password": password}))
        .await
        .assert_status(201);
    app.login_email(email, "a wrong password!")
        .await
        .assert_status(401);
    let login = app.login_email(email, password).await;
    login.assert_status(200);
    let first = login.json();
    let refreshed = app.refresh(first["refresh_token"].as_str().unwrap()).await;
    refreshed.assert_status(200);
    let second = refreshed.json();
    // Reuse of a rotated-out token: logged as a warning, without the token.
    app.refresh(first["refresh_token"].as_str().unwrap())
        .await
        .assert_status(401);
    app.forgot_password(email).await.assert_status(202);
    let reset_token = reset_token_from_mail(&mailbox.wait_for(crate::helpers::RESET_MAIL, 1).await);
    app.reset_password(&reset_token, new_password)
        .await
        .assert_status(204);
    app.me(second["access_token"].as_str().unwrap())
        .await
        .assert_status(401);
    // Opening the mailed link (the reset page) logs the path, never the query string.
    app.get(&format!("/reset-password?token={reset_token}"), None)
        .await
        .assert_status(200);
    let after = app.login_email(email, new_password).await;
    after.assert_status(200);
    let after = after.json();

    let mut secrets: Vec<String> = vec![password.into(), new_password.into(), reset_token.clone()];
    for tokens in [&first, &second, &after] {
        for field in ["access_token", "refresh_token"] {
            let token = tokens[field].as_str().unwrap().to_owned();
            secrets.push(user_service::services::hash_token(&token));
            secrets.push(token);
        }
    }
    secrets.push(user_service::services::hash_token(&reset_token));
    if let Some(path) = app.database_path() {
        let conn = rusqlite::Connection::open(path).unwrap();
        let hash: String = conn
            .query_row(
                "SELECT password_hash FROM users WHERE email = ?1",
                [email],
                |row| row.get(0),
            )
            .unwrap();
        secrets.push(hash);
    }

    let lines = captured_lines();
    for line in &lines {
        let parsed: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        for key in ["timestamp", "level", "message"] {
            assert!(parsed.get(key).is_some(), "no {key} in {line}");
        }
        for secret in &secrets {
            assert!(
                !line.contains(secret.as_str()),
                "a secret was logged: {line}"
            );
        }
    }

    // The capture really saw this flow: one access line per request, with its details.
    let login_lines: Vec<Value> = lines
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|v| v["message"] == "request completed" && v["route"] == "/api/auth/login")
        // Other tests' apps run in this process too; a request of theirs whose span began
        // before the capture was installed logs without a span, and is not this flow's.
        .filter(|v| v.get("span").is_some())
        .collect();
    assert!(login_lines.len() >= 3, "login requests were not logged");
    for entry in &login_lines {
        assert!(entry["span"]["request_id"].is_string(), "{entry}");
        assert!(
            entry["status"].is_u64() && entry["latency_ms"].is_number(),
            "{entry}"
        );
    }
    assert!(
        lines
            .iter()
            .any(|l| l.contains("mail sent") && l.contains(r#""kind":"password_reset""#)),
        "the mail was not logged"
    );
}
