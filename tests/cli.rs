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
}
