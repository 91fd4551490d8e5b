//! Spawning the service on a random port and talking to it over HTTP.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use reqwest::{Response, StatusCode, header::HeaderMap};
use serde_json::{Value, json};
use user_service::{config::Settings, startup::Application};

pub const JWT_SECRET: &str = "test-secret-0123456789-abcdefghij-0123456";
pub const ADMIN_EMAIL: &str = "admin@example.com";
pub const ADMIN_PASSWORD: &str = "admin password 123";
pub const PASSWORD: &str = "correct horse battery";

#[allow(dead_code)]
pub struct TestApp {
    pub address: String,
    pub port: u16,
    pub client: reqwest::Client,
    // Kept alive for as long as the app runs: dropping it deletes the database.
    _db_dir: Option<tempfile::TempDir>,
}

impl TestApp {
    /// The SQLite file behind the app; `None` when the suite runs against MongoDB.
    pub fn database_path(&self) -> Option<std::path::PathBuf> {
        self._db_dir.as_ref().map(|dir| dir.path().join("users.db"))
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// Starts the service with the test defaults, overridden by `extra`.
pub async fn spawn_app_with(extra: &[(&str, &str)]) -> TestApp {
    let mut vars: HashMap<String, String> = [
        ("HOST", "127.0.0.1"),
        ("PORT", "0"),
        ("BCRYPT_COST", "4"),
        ("JWT_SECRET", JWT_SECRET),
        ("APP_ENV", "development"),
        ("RATE_LIMIT_PER_SECOND", "0"),
        // Tests that ask for mails quickly; the throttle's own tests turn it on.
        ("MAIL_THROTTLE_SECS", "0"),
        ("ADMIN_EMAIL", ADMIN_EMAIL),
        ("ADMIN_PASSWORD", ADMIN_PASSWORD),
        ("ADMIN_NAME", "Admin"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();

    let db_dir = match std::env::var("MONGODB_TEST_URI") {
        Ok(uri) if !uri.is_empty() => {
            vars.insert("DATABASE_URL".into(), uri);
            vars.insert(
                "DATABASE_NAME".into(),
                format!("user_service_test_{}", random_hex(8)),
            );
            None
        }
        _ => {
            let dir = tempfile::tempdir().expect("a temporary directory");
            vars.insert(
                "DATABASE_URL".into(),
                format!("sqlite://{}", dir.path().join("users.db").display()),
            );
            Some(dir)
        }
    };
    for (key, value) in extra {
        vars.insert((*key).to_owned(), (*value).to_owned());
    }

    let settings = Settings::from_vars(vars).expect("valid test settings");
    let app = Application::build(settings)
        .await
        .expect("the application starts");
    let port = app.port();
    tokio::spawn(app.run_until_stopped());

    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        port,
        client,
        _db_dir: db_dir,
    }
}

pub fn random_hex(bytes: usize) -> String {
    use rand::RngCore;
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

/// A response read to the end: status, headers and body.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
}

impl Reply {
    pub async fn from(response: Response) -> Self {
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.expect("a readable body");
        Self {
            status,
            headers,
            text,
        }
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.text))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ASCII header"))
    }

    /// Asserts the status, with the body in the message when it differs.
    #[track_caller]
    pub fn assert_status(&self, expected: u16) -> &Self {
        assert_eq!(
            self.status.as_u16(),
            expected,
            "unexpected status; body: {}",
            self.text
        );
        self
    }

    /// Asserts an RFC 9457 problem document with this status, and returns its body.
    #[track_caller]
    pub fn assert_problem(&self, expected: u16) -> Value {
        self.assert_status(expected);
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "problem content type; body: {}",
            self.text
        );
        let body = self.json();
        assert_eq!(body["status"], json!(expected), "{body}");
        assert!(body["type"].is_string(), "problem without type: {body}");
        assert!(
            body["title"].as_str().is_some_and(|s| !s.is_empty()),
            "problem without title: {body}"
        );
        assert!(body["detail"].is_string(), "problem without detail: {body}");
        if expected == 401 {
            assert_eq!(
                self.header("www-authenticate"),
                Some("Bearer"),
                "401 without WWW-Authenticate: Bearer"
            );
        }
        body
    }

    /// Asserts a 422 whose `errors[]` names exactly these fields (in any order).
    #[track_caller]
    pub fn assert_invalid_fields(&self, fields: &[&str]) -> Value {
        let body = self.assert_problem(422);
        let mut named = error_fields(&body);
        named.sort();
        let mut expected: Vec<String> = fields.iter().map(|f| (*f).to_owned()).collect();
        expected.sort();
        assert_eq!(named, expected, "{body}");
        for error in body["errors"].as_array().unwrap() {
            assert!(
                error["message"].as_str().is_some_and(|m| !m.is_empty()),
                "{body}"
            );
        }
        body
    }
}

pub fn error_fields(body: &Value) -> Vec<String> {
    body["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|e| e["field"].as_str().expect("field name").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// A signed-in user as the tests use one.
#[derive(Debug, Clone)]
#[allow(dead_code)]
pub struct Session {
    pub id: String,
    pub email: String,
    pub password: String,
    pub access_token: String,
    pub refresh_token: String,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    async fn send(&self, builder: reqwest::RequestBuilder) -> Reply {
        Reply::from(builder.send().await.expect("the request is sent")).await
    }

    fn with_token(
        builder: reqwest::RequestBuilder,
        token: Option<&str>,
    ) -> reqwest::RequestBuilder {
        match token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        self.send(Self::with_token(self.client.get(self.url(path)), token))
            .await
    }

    pub async fn head(&self, path: &str, token: Option<&str>) -> Reply {
        self.send(Self::with_token(self.client.head(self.url(path)), token))
            .await
    }

    pub async fn post_json(&self, path: &str, body: &Value, token: Option<&str>) -> Reply {
        self.send(Self::with_token(self.client.post(self.url(path)), token).json(body))
            .await
    }

    pub async fn put_json(&self, path: &str, body: &Value, token: Option<&str>) -> Reply {
        self.send(Self::with_token(self.client.put(self.url(path)), token).json(body))
            .await
    }

    pub async fn patch_json(&self, path: &str, body: &Value, token: Option<&str>) -> Reply {
        self.send(Self::with_token(self.client.patch(self.url(path)), token).json(body))
            .await
    }

    /// A raw POST with any content type and body.
    pub async fn post_raw(&self, path: &str, content_type: &str, body: Vec<u8>) -> Reply {
        self.send(
            self.client
                .post(self.url(path))
                .header("content-type", content_type)
                .body(body),
        )
        .await
    }

    // --- health ---

    pub async fn health(&self) -> Reply {
        self.get("/health", None).await
    }

    pub async fn ready(&self) -> Reply {
        self.get("/ready", None).await
    }

    // --- auth ---

    pub async fn register(&self, body: &Value) -> Reply {
        self.post_json("/api/auth/register", body, None).await
    }

    pub async fn login(&self, body: &Value) -> Reply {
        self.post_json("/api/auth/login", body, None).await
    }

    pub async fn login_email(&self, email: &str, password: &str) -> Reply {
        self.login(&json!({"email": email, "password": password}))
            .await
    }

    pub async fn login_username(&self, username: &str, password: &str) -> Reply {
        self.login(&json!({"username": username, "password": password}))
            .await
    }

    pub async fn refresh(&self, refresh_token: &str) -> Reply {
        self.post_json(
            "/api/auth/refresh",
            &json!({"refresh_token": refresh_token}),
            None,
        )
        .await
    }

    pub async fn logout(&self, refresh_token: &str) -> Reply {
        self.post_json(
            "/api/auth/logout",
            &json!({"refresh_token": refresh_token}),
            None,
        )
        .await
    }

    pub async fn forgot_password(&self, email: &str) -> Reply {
        self.post_json("/api/auth/forgot-password", &json!({"email": email}), None)
            .await
    }

    pub async fn reset_password(&self, token: &str, new_password: &str) -> Reply {
        self.post_json(
            "/api/auth/reset-password",
            &json!({"token": token, "new_password": new_password}),
            None,
        )
        .await
    }

    // --- users ---

    pub async fn list(&self, query: &str, token: &str) -> Reply {
        let path = if query.is_empty() {
            "/api/users".to_owned()
        } else {
            format!("/api/users?{query}")
        };
        self.get(&path, Some(token)).await
    }

    pub async fn create_user(&self, body: &Value, token: &str) -> Reply {
        self.post_json("/api/users", body, Some(token)).await
    }

    pub async fn get_user(&self, id: &str, token: &str) -> Reply {
        self.get(&format!("/api/users/{id}"), Some(token)).await
    }

    pub async fn me(&self, token: &str) -> Reply {
        self.get("/api/users/me", Some(token)).await
    }

    pub async fn update(&self, id: &str, body: &Value, token: &str) -> Reply {
        self.put_json(&format!("/api/users/{id}"), body, Some(token))
            .await
    }

    pub async fn patch(&self, id: &str, body: &Value, token: &str) -> Reply {
        self.patch_json(&format!("/api/users/{id}"), body, Some(token))
            .await
    }

    pub async fn delete(&self, id: &str, token: &str) -> Reply {
        self.send(
            self.client
                .delete(self.url(&format!("/api/users/{id}")))
                .bearer_auth(token),
        )
        .await
    }

    pub async fn activate(&self, id: &str, token: &str) -> Reply {
        self.put_empty(&format!("/api/users/{id}/activate"), token)
            .await
    }

    pub async fn deactivate(&self, id: &str, token: &str) -> Reply {
        self.put_empty(&format!("/api/users/{id}/deactivate"), token)
            .await
    }

    pub async fn unlock(&self, id: &str, token: &str) -> Reply {
        self.put_empty(&format!("/api/users/{id}/unlock"), token)
            .await
    }

    /// A PUT without a body, as the activate, deactivate and unlock routes take.
    async fn put_empty(&self, path: &str, token: &str) -> Reply {
        self.send(self.client.put(self.url(path)).bearer_auth(token))
            .await
    }

    // --- composites ---

    pub async fn admin_session(&self) -> Session {
        let reply = self.login_email(ADMIN_EMAIL, ADMIN_PASSWORD).await;
        reply.assert_status(200);
        let tokens = reply.json();
        let access_token = tokens["access_token"].as_str().unwrap().to_owned();
        let me = self.me(&access_token).await;
        me.assert_status(200);
        Session {
            id: me.json()["id"].as_str().unwrap().to_owned(),
            email: ADMIN_EMAIL.to_owned(),
            password: ADMIN_PASSWORD.to_owned(),
            access_token,
            refresh_token: tokens["refresh_token"].as_str().unwrap().to_owned(),
        }
    }

    pub async fn admin_token(&self) -> String {
        self.admin_session().await.access_token
    }

    /// Registers `name <email>` (with `PASSWORD`) and returns the created user.
    pub async fn register_user(&self, name: &str, email: &str, username: Option<&str>) -> Value {
        let mut body = json!({"name": name, "email": email, "password": PASSWORD});
        if let Some(username) = username {
            body["username"] = json!(username);
        }
        let reply = self.register(&body).await;
        reply.assert_status(201);
        reply.json()
    }

    pub async fn login_session(&self, email: &str, password: &str) -> Session {
        let reply = self.login_email(email, password).await;
        reply.assert_status(200);
        let tokens = reply.json();
        let access_token = tokens["access_token"].as_str().unwrap().to_owned();
        let me = self.me(&access_token).await;
        me.assert_status(200);
        Session {
            id: me.json()["id"].as_str().unwrap().to_owned(),
            email: email.to_owned(),
            password: password.to_owned(),
            access_token,
            refresh_token: tokens["refresh_token"].as_str().unwrap().to_owned(),
        }
    }

    /// Registers a plain user with `PASSWORD` and signs them in.
    pub async fn register_and_login(&self, name: &str, email: &str) -> Session {
        self.register_user(name, email, None).await;
        self.login_session(email, PASSWORD).await
    }

    /// Creates a second admin through the admin API and signs them in.
    pub async fn second_admin(&self, admin_token: &str) -> Session {
        let email = "second.admin@example.com";
        self.create_user(
            &json!({"name": "Second Admin", "email": email, "password": PASSWORD, "role": "admin"}),
            admin_token,
        )
        .await
        .assert_status(201);
        self.login_session(email, PASSWORD).await
    }
}

// --- an in-process SMTP server ---

/// The subjects of the service's mails.
pub const RESET_MAIL: &str = "Reset your password";
pub const VERIFICATION_MAIL: &str = "Confirm your email address";
pub const PASSWORD_NOTICE: &str = "Your password was changed";
pub const EMAIL_NOTICE: &str = "The email address of your account was changed";

/// Every message the SMTP server received, as raw text.
#[derive(Clone, Default)]
pub struct Mailbox {
    messages: Arc<Mutex<Vec<String>>>,
}

impl Mailbox {
    pub fn messages(&self) -> Vec<String> {
        self.messages.lock().unwrap().clone()
    }

    /// The messages of one kind, by their subject (e.g. [`RESET_MAIL`]).
    pub fn of_kind(&self, subject: &str) -> Vec<String> {
        let header = format!("Subject: {subject}");
        self.messages()
            .into_iter()
            .filter(|message| message.lines().any(|line| line == header))
            .collect()
    }

    /// Waits up to ten seconds for the `n`-th message (1-based) of a kind.
    pub async fn wait_for(&self, subject: &str, n: usize) -> String {
        for _ in 0..100 {
            if let Some(message) = self.of_kind(subject).get(n - 1) {
                return message.clone();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "no message number {n} of {subject:?} within 10 s; got {}",
            self.of_kind(subject).len()
        );
    }
}

#[derive(Clone)]
struct CollectingHandler {
    mailbox: Mailbox,
    current: Vec<u8>,
}

impl mailin_embedded::Handler for CollectingHandler {
    fn data_start(
        &mut self,
        _domain: &str,
        _from: &str,
        _is8bit: bool,
        _to: &[String],
    ) -> mailin_embedded::Response {
        self.current.clear();
        mailin_embedded::response::OK
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.current.extend_from_slice(buf);
        Ok(())
    }

    fn data_end(&mut self) -> mailin_embedded::Response {
        let message = String::from_utf8_lossy(&std::mem::take(&mut self.current)).into_owned();
        self.mailbox.messages.lock().unwrap().push(message);
        mailin_embedded::response::OK
    }
}

/// Starts a plain-text SMTP server on a free local port (in its own thread, for the rest of
/// the test process) and returns its port and the messages it receives.
pub fn start_smtp_server() -> (u16, Mailbox) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let port = listener.local_addr().unwrap().port();
    let mailbox = Mailbox::default();
    let handler = CollectingHandler {
        mailbox: mailbox.clone(),
        current: Vec::new(),
    };
    let mut server = mailin_embedded::Server::new(handler);
    server
        .with_name("smtp.test")
        .with_ssl(mailin_embedded::SslConfig::None)
        .expect("no TLS")
        // The service pools its SMTP connections, and each open one holds a thread here.
        .with_num_threads(16)
        .with_tcp_listener(listener);
    std::thread::spawn(move || {
        let _ = server.serve();
    });
    (port, mailbox)
}

/// The body of a raw mail, its transfer encoding undone.
pub fn decoded_body(raw: &str) -> String {
    let raw = raw.replace("\r\n", "\n");
    let (headers, body) = raw.split_once("\n\n").unwrap_or(("", raw.as_str()));
    let encoding = headers
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("content-transfer-encoding")
                .then(|| value.trim().to_ascii_lowercase())
        })
        .unwrap_or_default();
    match encoding.as_str() {
        "quoted-printable" => decode_quoted_printable(body),
        "base64" => {
            use base64::Engine;
            let compact: String = body.chars().filter(|c| !c.is_whitespace()).collect();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(compact)
                .expect("a base64 body");
            String::from_utf8(bytes).expect("a UTF-8 body")
        }
        _ => body.to_owned(),
    }
}

fn decode_quoted_printable(body: &str) -> String {
    let unwrapped = body.replace("=\n", "");
    let bytes = unwrapped.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'='
            && i + 2 < bytes.len()
            && let Some(byte) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).expect("a UTF-8 body")
}

/// The reset token from the link in a reset mail.
pub fn reset_token_from_mail(raw: &str) -> String {
    token_from_mail(raw, "http://localhost:8080/reset-password?token=")
}

/// The verification token from the link in a verification mail.
pub fn verification_token_from_mail(raw: &str) -> String {
    token_from_mail(raw, "http://localhost:8080/verify-email?token=")
}

fn token_from_mail(raw: &str, marker: &str) -> String {
    let body = decoded_body(raw);
    let start = body
        .find(marker)
        .unwrap_or_else(|| panic!("no {marker} link in the mail: {body}"))
        + marker.len();
    let token: String = body[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        .collect();
    assert!(!token.is_empty(), "empty token in {body}");
    token
}

#[test]
fn mail_bodies_are_decoded() {
    let qp = "Content-Transfer-Encoding: quoted-printable\r\n\r\n\
              open:\r\nhttp://localhost:8080/reset-password?token=3DabcDEF_12=\r\n-xyz\r\n";
    assert_eq!(reset_token_from_mail(qp), "abcDEF_12-xyz");
    let plain = "Subject: x\r\n\r\nhttp://localhost:8080/reset-password?token=tok-en_1\r\n";
    assert_eq!(reset_token_from_mail(plain), "tok-en_1");
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD
        .encode("link: http://localhost:8080/reset-password?token=b64tok\n");
    let b64 = format!("Content-Transfer-Encoding: base64\r\n\r\n{encoded}\r\n");
    assert_eq!(reset_token_from_mail(&b64), "b64tok");
}
