//! Several service processes on one database, as in a deployment with replicas: the rules
//! that must hold across instances, tried with real processes of the binary.
//!
//! SQLite always runs (two processes on one file). MongoDB runs with `MONGODB_TEST_URI`
//! (`cargo test --test instances -- --include-ignored`).

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_user-service");
const PASSWORD: &str = "instances password";
const SEEDED: &str = "seed@example.com";

/// A running service process, killed when dropped.
struct Instance {
    child: Child,
    base: String,
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start(dir: &Path, settings: &[(&str, String)]) -> Instance {
    let port = free_port();
    let mut command = Command::new(BIN);
    command
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOST", "127.0.0.1")
        .env("PORT", port.to_string())
        .env("BCRYPT_COST", "4")
        .env("RATE_LIMIT_PER_SECOND", "0")
        .env("JWT_SECRET", "instances-secret-instances-secret-32")
        .env("ADMIN_EMAIL", SEEDED)
        .env("ADMIN_PASSWORD", PASSWORD)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (name, value) in settings {
        command.env(name, value);
    }
    let instance = Instance {
        child: command.spawn().expect("start the service"),
        base: format!("http://127.0.0.1:{port}"),
    };
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(response) = client.get(format!("{}/ready", instance.base)).send().await
            && response.status() == 200
        {
            return instance;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the service on port {port} did not become ready");
}

struct Api {
    client: reqwest::Client,
}

impl Api {
    async fn call(
        &self,
        method: reqwest::Method,
        url: String,
        token: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self.client.request(method, url).bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    /// The access token of an active user, or `None` when they cannot log in.
    async fn login(&self, base: &str, email: &str) -> Option<String> {
        let response = self
            .client
            .post(format!("{base}/api/auth/login"))
            .json(&json!({"email": email, "password": PASSWORD}))
            .send()
            .await
            .expect("login");
        if response.status() != 200 {
            return None;
        }
        let body: Value = response.json().await.unwrap();
        Some(body["access_token"].as_str().unwrap().to_owned())
    }

    async fn me(&self, base: &str, token: &str) -> (u16, Value) {
        self.call(
            reqwest::Method::GET,
            format!("{base}/api/users/me"),
            token,
            None,
        )
        .await
    }

    async fn active_admins(&self, base: &str, token: &str) -> Vec<String> {
        let (status, page) = self
            .call(
                reqwest::Method::GET,
                format!("{base}/api/users?role=admin&active=true&per_page=100"),
                token,
                None,
            )
            .await;
        assert_eq!(status, 200, "{page}");
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|user| user["id"].as_str().unwrap().to_owned())
            .collect()
    }
}

/// How one instance takes an admin out: the other admin, or itself.
#[derive(Clone, Copy, Debug)]
enum Removal {
    Demote,
    Deactivate,
    Delete,
    PatchInactive,
    SelfDemote,
    SelfDelete,
}

impl Removal {
    async fn run(self, api: &Api, base: &str, token: &str, other: &str) -> u16 {
        use reqwest::Method;
        let (method, path, body) = match self {
            Removal::Demote => (
                Method::PATCH,
                format!("/api/users/{other}"),
                Some(json!({"role": "user"})),
            ),
            Removal::Deactivate => (Method::PUT, format!("/api/users/{other}/deactivate"), None),
            Removal::Delete => (Method::DELETE, format!("/api/users/{other}"), None),
            Removal::PatchInactive => (
                Method::PATCH,
                format!("/api/users/{other}"),
                Some(json!({"active": false})),
            ),
            Removal::SelfDemote => (
                Method::PATCH,
                "/api/users/me".to_owned(),
                Some(json!({"role": "user"})),
            ),
            Removal::SelfDelete => (Method::DELETE, "/api/users/me".to_owned(), None),
        };
        api.call(method, format!("{base}{path}"), token, body)
            .await
            .0
    }
}

/// Two instances, two admins, each instance removing one of them at the same moment, round
/// after round: at least one active admin is always left, and no request fails with 5xx.
async fn two_instances_never_remove_the_last_admin(database: Vec<(&str, String)>) {
    let dir = tempfile::tempdir().unwrap();
    let first = start(dir.path(), &database).await;
    let second = start(dir.path(), &database).await;
    let api = Api {
        client: reqwest::Client::new(),
    };
    let mut survivor = SEEDED.to_owned();
    let removals = [
        Removal::Demote,
        Removal::Deactivate,
        Removal::Delete,
        Removal::PatchInactive,
        Removal::SelfDemote,
        Removal::SelfDelete,
    ];
    for round in 0..24 {
        let removal = removals[round % removals.len()];
        // Two new admins, made by the admin left from the round before, who then goes.
        let token = api.login(&first.base, &survivor).await.expect("an admin");
        let (x, y) = (
            format!("x{round}@example.com"),
            format!("y{round}@example.com"),
        );
        for email in [&x, &y] {
            let body =
                json!({"name": "Admin", "email": email, "password": PASSWORD, "role": "admin"});
            let (status, created) = api
                .call(
                    reqwest::Method::POST,
                    format!("{}/api/users", first.base),
                    &token,
                    Some(body),
                )
                .await;
            assert_eq!(status, 201, "{created}");
        }
        let x_token = api.login(&first.base, &x).await.unwrap();
        let y_token = api.login(&second.base, &y).await.unwrap();
        let admins = api.active_admins(&first.base, &x_token).await;
        let x_id = api.me(&first.base, &x_token).await.1["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let y_id = api.me(&first.base, &y_token).await.1["id"]
            .as_str()
            .unwrap()
            .to_owned();
        for old in admins.iter().filter(|id| **id != x_id && **id != y_id) {
            let (status, body) = api
                .call(
                    reqwest::Method::DELETE,
                    format!("{}/api/users/{old}", first.base),
                    &x_token,
                    None,
                )
                .await;
            assert_eq!(status, 204, "{body}");
        }

        let (a, b) = tokio::join!(
            removal.run(&api, &first.base, &x_token, &y_id),
            removal.run(&api, &second.base, &y_token, &x_id),
        );
        for status in [a, b] {
            assert!(
                // 401 or 403: the other went first and this admin is gone or demoted.
                matches!(status, 200 | 204 | 401 | 403 | 409),
                "round {round} ({removal:?}): {status}"
            );
        }
        let mut left = Vec::new();
        for email in [&x, &y] {
            if let Some(token) = api.login(&second.base, email).await
                && api.me(&second.base, &token).await.1["role"] == "admin"
            {
                left.push(email.clone());
            }
        }
        assert!(
            !left.is_empty(),
            "round {round} ({removal:?}): no active admin left ({a}, {b})"
        );
        survivor = left.swap_remove(0);
    }
}

#[tokio::test]
async fn two_processes_on_one_sqlite_file_never_remove_the_last_admin() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("shared.db").display());
    two_instances_never_remove_the_last_admin(vec![("DATABASE_URL", url)]).await;
}

/// Wrong attempts alternating between two instances count toward one lock, which both
/// then enforce.
async fn two_instances_share_the_login_lock(database: Vec<(&str, String)>) {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = database;
    settings.push(("LOCKOUT_THRESHOLD", "4".to_owned()));
    let first = start(dir.path(), &settings).await;
    let second = start(dir.path(), &settings).await;
    let client = reqwest::Client::new();
    let attempt = |base: &str, password: &str| {
        client
            .post(format!("{base}/api/auth/login"))
            .json(&json!({"email": SEEDED, "password": password}))
            .send()
    };
    for round in 0..4 {
        let base = if round % 2 == 0 {
            &first.base
        } else {
            &second.base
        };
        let status = attempt(base, "wrong password").await.unwrap().status();
        assert_eq!(status, 401, "attempt {round}");
    }
    for base in [&first.base, &second.base] {
        let status = attempt(base, PASSWORD).await.unwrap().status();
        assert_eq!(status, 429, "{base}");
    }
}

#[tokio::test]
async fn two_processes_on_one_sqlite_file_share_the_login_lock() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("shared.db").display());
    two_instances_share_the_login_lock(vec![("DATABASE_URL", url)]).await;
}

#[tokio::test]
#[ignore = "needs MongoDB: set MONGODB_TEST_URI and run with --include-ignored"]
async fn two_processes_on_one_mongodb_database_share_the_login_lock() {
    let uri = std::env::var("MONGODB_TEST_URI").expect("MONGODB_TEST_URI");
    let database = format!("user_service_lock_{}", std::process::id());
    two_instances_share_the_login_lock(vec![("DATABASE_URL", uri), ("DATABASE_NAME", database)])
        .await;
}

/// `create-admin` is a second process on the file while the server keeps running.
#[tokio::test]
async fn create_admin_works_beside_a_running_server_on_one_sqlite_file() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("shared.db").display());
    let server = start(dir.path(), &[("DATABASE_URL", url.clone())]).await;
    let api = Api {
        client: reqwest::Client::new(),
    };
    // The server keeps writing (logins record their time) while the command runs.
    let busy = async {
        for _ in 0..20 {
            assert!(api.login(&server.base, SEEDED).await.is_some());
        }
    };
    let command = tokio::task::spawn_blocking(move || {
        let mut child = Command::new(BIN)
            .args([
                "create-admin",
                "--email",
                "second@example.com",
                "--name",
                "Second",
            ])
            .current_dir(dir.path())
            .env_clear()
            .env("BCRYPT_COST", "4")
            .env("DATABASE_URL", url)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        writeln!(child.stdin.take().unwrap(), "{PASSWORD}").unwrap();
        (child.wait_with_output().unwrap(), dir)
    });
    let ((output, _dir), ()) = tokio::join!(async { command.await.unwrap() }, busy);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let token = api.login(&server.base, "second@example.com").await.unwrap();
    assert_eq!(api.me(&server.base, &token).await.1["role"], "admin");
}

#[tokio::test]
#[ignore = "needs MongoDB: set MONGODB_TEST_URI and run with --include-ignored"]
async fn two_processes_on_one_mongodb_database_never_remove_the_last_admin() {
    let uri = std::env::var("MONGODB_TEST_URI").expect("MONGODB_TEST_URI");
    let database = format!("user_service_instances_{}", std::process::id());
    two_instances_never_remove_the_last_admin(vec![
        ("DATABASE_URL", uri),
        ("DATABASE_NAME", database),
    ])
    .await;
}

fn key_file(name: &str) -> String {
    format!("{}/tests/keys/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// The `kid` in a token's header.
fn kid_of(token: &str) -> String {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    let header = token.split('.').next().unwrap();
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
    header["kid"].as_str().unwrap().to_owned()
}

async fn published_kids(base: &str) -> Vec<String> {
    let keys: Value = reqwest::get(format!("{base}/.well-known/jwks.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|key| key["kid"].as_str().unwrap().to_owned())
        .collect()
}

/// Rotation as an operator does it: restart with `new,old`. Tokens signed with the old key
/// before the restart still work; new ones are signed with the new key. Once the old key is
/// dropped, its tokens are refused.
async fn rotation_across_a_restart(
    algorithm: &str,
    old: &str,
    new: &str,
    database: Vec<(&str, String)>,
) {
    let dir = tempfile::tempdir().unwrap();
    let api = Api {
        client: reqwest::Client::new(),
    };
    let with_keys = |keys: &[&str]| {
        let mut settings = database.clone();
        settings.push(("JWT_ALGORITHM", algorithm.to_owned()));
        let files: Vec<String> = keys.iter().map(|k| key_file(k)).collect();
        settings.push(("JWT_PRIVATE_KEYS", files.join(",")));
        settings
    };

    let before = start(dir.path(), &with_keys(&[old])).await;
    let old_token = api.login(&before.base, SEEDED).await.unwrap();
    let old_kid = kid_of(&old_token);
    assert_eq!(
        published_kids(&before.base).await,
        std::slice::from_ref(&old_kid)
    );
    drop(before);

    let rotated = start(dir.path(), &with_keys(&[new, old])).await;
    let (status, me) = api.me(&rotated.base, &old_token).await;
    assert_eq!(
        status, 200,
        "{algorithm}: a token from before the restart: {me}"
    );
    let new_token = api.login(&rotated.base, SEEDED).await.unwrap();
    let new_kid = kid_of(&new_token);
    assert_ne!(
        new_kid, old_kid,
        "{algorithm}: new tokens are signed with the new key"
    );
    assert_eq!(
        published_kids(&rotated.base).await,
        [new_kid.clone(), old_kid]
    );
    assert_eq!(api.me(&rotated.base, &new_token).await.0, 200);
    drop(rotated);

    let retired = start(dir.path(), &with_keys(&[new])).await;
    assert_eq!(
        api.me(&retired.base, &old_token).await.0,
        401,
        "{algorithm}"
    );
    assert_eq!(
        api.me(&retired.base, &new_token).await.0,
        200,
        "{algorithm}"
    );
}

#[tokio::test]
async fn signing_keys_rotate_across_a_restart_on_one_sqlite_file() {
    for (algorithm, old, new) in [
        ("RS256", "rsa-a.pem", "rsa-b.pem"),
        ("EdDSA", "ed25519-a.pem", "ed25519-b.pem"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("shared.db").display());
        rotation_across_a_restart(algorithm, old, new, vec![("DATABASE_URL", url)]).await;
    }
}

#[tokio::test]
#[ignore = "needs MongoDB: set MONGODB_TEST_URI and run with --include-ignored"]
async fn signing_keys_rotate_across_a_restart_on_one_mongodb_database() {
    let uri = std::env::var("MONGODB_TEST_URI").expect("MONGODB_TEST_URI");
    for (algorithm, old, new) in [
        ("RS256", "rsa-a.pem", "rsa-b.pem"),
        ("EdDSA", "ed25519-a.pem", "ed25519-b.pem"),
    ] {
        let database = format!("user_service_rotation_{}_{algorithm}", std::process::id());
        rotation_across_a_restart(
            algorithm,
            old,
            new,
            vec![("DATABASE_URL", uri.clone()), ("DATABASE_NAME", database)],
        )
        .await;
    }
}
