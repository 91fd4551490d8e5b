//! The binary itself: configuration errors, `create-admin`, `healthcheck`, and shutdown.

use std::{
    io::Write,
    path::Path,
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

const BIN: &str = env!("CARGO_BIN_EXE_user-service");

/// The binary with a clean environment of ours, run in `dir` (so no stray `.env` is read).
fn command(dir: &Path, args: &[&str], vars: &[(&str, &str)]) -> Command {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("BCRYPT_COST", "4")
        .env(
            "DATABASE_URL",
            format!("sqlite://{}", dir.join("users.db").display()),
        );
    for (key, value) in vars {
        command.env(key, value);
    }
    command
}

fn run_with_stdin(mut command: Command, stdin: &str) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn a_bad_setting_stops_the_service_with_one_line_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    for (variable, value) in [
        ("PORT", "abc"),
        ("BCRYPT_COST", "99"),
        ("DATABASE_URL", "postgres://localhost/users"),
        ("RUST_LOG", "user_service=verbose"),
    ] {
        let output = command(dir.path(), &[], &[(variable, value)])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{variable}={value}");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(variable), "{stderr}");
    }
    let output = command(
        dir.path(),
        &[],
        &[("APP_ENV", "production"), ("JWT_SECRET", "short")],
    )
    .output()
    .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8(output.stderr)
            .unwrap()
            .contains("JWT_SECRET")
    );
}

#[test]
fn a_key_file_that_cannot_be_used_stops_the_service_naming_the_variable_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem").display().to_string();
    let rsa = format!("{}/tests/keys/rsa-a.pem", env!("CARGO_MANIFEST_DIR"));
    for (algorithm, file) in [("EdDSA", missing.as_str()), ("EdDSA", rsa.as_str())] {
        let output = command(
            dir.path(),
            &[],
            &[("JWT_ALGORITHM", algorithm), ("JWT_PRIVATE_KEYS", file)],
        )
        .output()
        .unwrap();
        assert_eq!(output.status.code(), Some(2), "{file}");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains("JWT_PRIVATE_KEYS"), "{stderr}");
        assert!(stderr.contains(file), "{stderr}");
    }
}

#[test]
fn create_admin_reads_the_password_from_stdin_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "create-admin",
        "--email",
        "Root@Example.com",
        "--name",
        "Root",
    ];
    let output = run_with_stdin(command(dir.path(), &args, &[]), "a long admin password\n");
    assert!(output.status.success(), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("root@example.com"));

    let again = run_with_stdin(command(dir.path(), &args, &[]), "another password!!\n");
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists already"));

    let short = run_with_stdin(
        command(
            dir.path(),
            &["create-admin", "--email", "x@example.com"],
            &[],
        ),
        "short\n",
    );
    assert!(!short.status.success());
    assert!(String::from_utf8_lossy(&short.stderr).contains("password"));

    let conn = rusqlite::Connection::open(dir.path().join("users.db")).unwrap();
    let (role, hash): (String, String) = conn
        .query_row(
            "SELECT role, password_hash FROM users WHERE email = 'root@example.com'",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap();
    assert_eq!(role, "admin");
    assert!(bcrypt::verify("a long admin password", &hash).unwrap());
    let users: i64 = conn
        .query_row("SELECT count(*) FROM users", [], |r| r.get(0))
        .unwrap();
    assert_eq!(users, 1);
}

#[test]
fn healthcheck_and_sigterm_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().to_string();
    let vars = [("HOST", "127.0.0.1"), ("PORT", port.as_str())];
    let mut server = command(dir.path(), &[], &vars)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    let healthy = || {
        command(dir.path(), &["healthcheck", "--port", &port], &[])
            .status()
            .unwrap()
            .success()
    };
    let started = Instant::now();
    while !healthy() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "never became healthy"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Without --port, PORT as the service reads it: set, or empty as if unset (8080, which
    // may or may not answer here; the point is that it is no usage error).
    let (code, _, stderr) = run(dir.path(), &["healthcheck"], &[("PORT", port.as_str())]);
    assert_eq!(code, Some(0), "{stderr}");
    let (code, _, stderr) = run(dir.path(), &["healthcheck"], &[("PORT", "")]);
    assert!(matches!(code, Some(0 | 1)), "{code:?} {stderr}");
    let (code, _, stderr) = run(dir.path(), &["healthcheck"], &[("PORT", "http")]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("PORT"), "{stderr}");

    let terminated = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(terminated.success());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = server.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit after SIGTERM: {status:?}");
    assert!(!healthy(), "still answering after shutdown");
    // It closed the database on the way out: the write-ahead log is folded in and gone.
    assert!(dir.path().join("users.db").exists());
    assert!(!dir.path().join("users.db-wal").exists());
}

/// Runs the binary to the end with `vars`; stdout and stderr as text.
fn run(dir: &Path, args: &[&str], vars: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let output = command(dir, args, vars).output().unwrap();
    (
        output.status.code(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

/// Serves `database` until dropped.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn serve(dir: &Path, database: &str) -> (Server, String) {
    let port = free_port().to_string();
    let vars = [
        ("HOST", "127.0.0.1"),
        ("PORT", port.as_str()),
        ("DATABASE_URL", database),
        ("RATE_LIMIT_PER_SECOND", "0"),
        ("ADMIN_EMAIL", "root@example.com"),
        ("ADMIN_PASSWORD", "a long admin password"),
    ];
    let server = Server(
        command(dir, &[], &vars)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    while reqwest::get(format!("{base}/ready")).await.is_err() {
        assert!(started.elapsed() < Duration::from_secs(30), "never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (server, base)
}

async fn login(base: &str, email: &str, password: &str) -> u16 {
    reqwest::Client::new()
        .post(format!("{base}/api/auth/login"))
        .json(&serde_json::json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn export_then_import_moves_every_user_with_their_password_hash() {
    let dir = tempfile::tempdir().unwrap();
    let first = format!("sqlite://{}", dir.path().join("first.db").display());
    let second = format!("sqlite://{}", dir.path().join("second.db").display());

    // Users made by the service itself: their hashes are bcrypt of what they registered.
    {
        let (_server, base) = serve(dir.path(), &first).await;
        let client = reqwest::Client::new();
        for (name, email, username) in [
            ("Mario Rossi", "mario@example.com", Some("mario")),
            ("Zoë Ünal", "zoe@example.com", None),
        ] {
            let mut body =
                serde_json::json!({"name": name, "email": email, "password": "their own password"});
            if let Some(username) = username {
                body["username"] = username.into();
            }
            let status = client
                .post(format!("{base}/api/auth/register"))
                .json(&body)
                .send()
                .await
                .unwrap()
                .status();
            assert_eq!(status, 201);
        }
    }

    let (code, exported, _) = run(dir.path(), &["export"], &[("DATABASE_URL", &first)]);
    assert_eq!(code, Some(0));
    let lines: Vec<serde_json::Value> = exported
        .lines()
        .map(|line| serde_json::from_str(line).expect("every line of stdout is a user"))
        .collect();
    assert_eq!(lines.len(), 3, "{exported}");
    assert!(
        lines
            .iter()
            .all(|user| user["password_hash"].as_str().unwrap().starts_with("$2"))
    );
    let file = dir.path().join("users.jsonl");
    std::fs::write(&file, &exported).unwrap();
    let file = file.display().to_string();

    let (code, out, err) = run(dir.path(), &["import", &file], &[("DATABASE_URL", &second)]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("imported 3 users, 0 already there, 0 lines refused"),
        "{out}"
    );
    let (_, again, _) = run(dir.path(), &["export"], &[("DATABASE_URL", &second)]);
    assert_eq!(again, exported, "the second database holds the same users");

    // A second run imports nothing twice.
    let (code, out, _) = run(dir.path(), &["import", &file], &[("DATABASE_URL", &second)]);
    assert_eq!(code, Some(0));
    assert!(
        out.contains("imported 0 users, 3 already there, 0 lines refused"),
        "{out}"
    );

    // The moved hashes work.
    let (_server, base) = serve(dir.path(), &second).await;
    assert_eq!(
        login(&base, "mario@example.com", "their own password").await,
        200
    );
    assert_eq!(
        login(&base, "zoe@example.com", "their own password").await,
        200
    );
    assert_eq!(
        login(&base, "zoe@example.com", "not their password").await,
        401
    );
}

#[test]
fn import_reports_each_refused_line_and_imports_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("users.jsonl");
    let hash = "$2b$04$EGdrhbKUv8Oc9vGiXX0HQOxSg445d09uuCwTO/nGM6uPvUFhx9RSi";
    let lines = [
        format!(r#"{{"name": "Ann", "email": "ann@example.com", "password_hash": "{hash}", "username": "ann"}}"#),
        r#"{"name": "Bob", "email": "not an email", "password": "a long password"}"#.to_owned(),
        String::new(),
        r#"{"name": "Cy", "email": "cy@example.com", "password": "password"}"#.to_owned(),
        r#"{"name": "Di", "email": "di@example.com", "password_hash": "plain text"}"#.to_owned(),
        format!(r#"{{"name": "Ed", "email": "ed@example.com", "password_hash": "{hash}", "username": "ANN"}}"#),
        r#"{"name": "Fay", "email": "fay@example.com"}"#.to_owned(),
        r#"{"name": "Gus", "email": "gus@example.com", "password": "a long password", "shoe_size": 9}"#.to_owned(),
        "[1, 2".to_owned(),
        r#"{"name": "Hal", "email": "hal@example.com", "password": "hal's long password", "role": "admin"}"#.to_owned(),
        r#"{"name": "Ida", "email": "ida.long@example.com", "password": "IDA.LONG"}"#.to_owned(),
    ];
    std::fs::write(&file, lines.join("\n")).unwrap();
    let (code, out, err) = run(dir.path(), &["import", &file.display().to_string()], &[]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        out.contains("imported 2 users, 0 already there, 8 lines refused"),
        "{out}"
    );
    // The command closed the database: its write-ahead log is copied into the file and gone.
    assert!(dir.path().join("users.db").exists());
    assert!(!dir.path().join("users.db-wal").exists());
    for expected in [
        "line 2: email:",
        "line 4: password: is one of the most common passwords",
        "line 5: password_hash: is not a bcrypt hash",
        "line 6: username: another user has it",
        "line 7: password_hash: give exactly one of password_hash and password",
        "line 8: not a user: unknown field `shoe_size`",
        "line 9: not a user:",
        "line 11: password: must not be your email",
    ] {
        assert!(err.contains(expected), "{expected:?} not in {err}");
    }
    let (_, exported, _) = run(dir.path(), &["export"], &[]);
    let emails: Vec<String> = exported
        .lines()
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(line).unwrap()["email"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(emails, ["ann@example.com", "hal@example.com"]);
}

#[test]
fn export_and_reindex_refuse_a_database_that_is_not_there() {
    let dir = tempfile::tempdir().unwrap();
    // A relative path, as from the wrong directory: nothing is made there.
    let vars = [("DATABASE_URL", "sqlite://data/users.db")];
    for (command, what) in [
        ("export", "nothing to export"),
        ("reindex", "nothing to reindex"),
    ] {
        let (code, out, err) = run(dir.path(), &[command], &vars);
        assert_eq!(code, Some(1), "{command}: {out}{err}");
        assert!(out.is_empty(), "{command}: {out}");
        assert!(
            err.contains("there is no database at data/users.db") && err.contains(what),
            "{command}: {err}"
        );
        assert!(
            !dir.path().join("data").exists(),
            "{command} made a database"
        );
    }
}

/// A file that is not a SQLite database stops the service and every command that opens it,
/// naming the setting, the file and what is wrong with it; the file is left as it was.
#[test]
fn a_database_file_that_cannot_be_used_stops_every_command_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("notes.txt");
    let text = "not a database, though long enough for a header\n".repeat(100);
    std::fs::write(&file, &text).unwrap();
    let url = format!("sqlite://{}", file.display());
    let copy = dir.path().join("copy.db").display().to_string();
    let commands: [&[&str]; 4] = [&[], &["export"], &["reindex"], &["backup", &copy]];
    for args in commands {
        let (code, _, err) = run(dir.path(), args, &[("DATABASE_URL", &url)]);
        assert_eq!(code, Some(1), "{args:?}: {err}");
        let said = format!(
            "user-service: DATABASE_URL names {}, which cannot be used as the SQLite database: \
             file is not a database",
            file.display()
        );
        assert!(err.contains(&said), "{args:?}: {err}");
    }
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text);
}

#[tokio::test]
async fn a_backup_taken_while_the_service_runs_is_the_whole_database() {
    let dir = tempfile::tempdir().unwrap();
    let live = format!("sqlite://{}", dir.path().join("live.db").display());
    let copy_path = dir.path().join("copy.db");
    let copy = copy_path.display().to_string();
    let (server, base) = serve(dir.path(), &live).await;
    let client = reqwest::Client::new();
    let body = serde_json::json!({"name": "Mario Rossi", "email": "mario@example.com",
        "password": "their own password"});
    let registered = client
        .post(format!("{base}/api/auth/register"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 201);

    // Taken while the service serves, its last writes still in the -wal file.
    let (code, out, err) = run(dir.path(), &["backup", &copy], &[("DATABASE_URL", &live)]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("backed up"), "{out}");
    let (code, _, err) = run(dir.path(), &["backup", &copy], &[("DATABASE_URL", &live)]);
    assert_eq!(code, Some(1), "a second backup into the same file: {err}");
    assert!(err.contains("exists already"), "{err}");
    drop(server);

    let export = |database: String| {
        let (code, out, err) = run(dir.path(), &["export"], &[("DATABASE_URL", &database)]);
        assert_eq!(code, Some(0), "{err}");
        out
    };
    let original = export(live);
    assert_eq!(
        original.lines().count(),
        2,
        "the admin and Mario: {original}"
    );
    assert_eq!(export(format!("sqlite://{copy}")), original);

    // The copy serves, its search index whole.
    let (_server, base) = serve(dir.path(), &format!("sqlite://{copy}")).await;
    let json = async |request: reqwest::RequestBuilder| -> serde_json::Value {
        request.send().await.unwrap().json().await.unwrap()
    };
    let admin =
        serde_json::json!({"email": "root@example.com", "password": "a long admin password"});
    let login = json(client.post(format!("{base}/api/auth/login")).json(&admin)).await;
    let token = login["access_token"].as_str().unwrap();
    let found = json(
        client
            .get(format!("{base}/api/users?q=ROSSI"))
            .bearer_auth(token),
    )
    .await;
    assert_eq!(found["total"], 1, "{found}");
    assert_eq!(found["items"][0]["email"], "mario@example.com", "{found}");
}
