use std::{
    io::{BufRead, Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Duration, Instant},
};

use clap::{Parser, Subcommand};
use tokio::runtime::Runtime;
use user_service::{
    config::{self, Settings},
    domain::{DisplayName, Email, NewPassword},
    services::{BATCH, EnsuredAdmin, ImportReport, NewAccount, Services},
    startup::Application,
    storage,
    telemetry::{self, LogOutput},
};

// Thread-local free lists: the many small allocations of a request never contend for a lock.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(version, about = "User management and authentication service")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP service (the default).
    Serve,
    /// Exit 0 if the service on this machine answers GET /health (for container health checks).
    Healthcheck {
        /// The port to ask; defaults to PORT (unset or empty: 8080), as the service reads it.
        #[arg(long)]
        port: Option<u16>,
    },
    /// Create an admin; the password is read from standard input.
    CreateAdmin {
        #[arg(long)]
        email: String,
        #[arg(long, default_value = "Administrator")]
        name: String,
    },
    /// Import users from a JSON Lines file (`-` for standard input): one user per line with
    /// `name`, `email` and `password_hash` (bcrypt) or `password`, optionally `id`,
    /// `username`, `role`, `active`, `email_verified` and the times `export` writes. Users
    /// whose id or email exists are skipped, so a second run imports nothing twice. Refused
    /// lines are reported with their number; the others are imported (exit 1 if any was
    /// refused).
    Import {
        /// The file to read.
        file: PathBuf,
    },
    /// Write every user as JSON Lines to standard output, oldest first, password hashes
    /// included (two-factor enrolments, sessions and the audit log are not exported).
    Export,
    /// Copy the embedded database, as it is at one moment, into a new file: safe while the
    /// service runs (a copy of the file alone is not: recent writes are in its `-wal` file).
    /// For MongoDB use mongodump.
    Backup {
        /// The new file to write.
        file: PathBuf,
    },
    /// Rebuild what `q` searches: the embedded database's search index, after a manual
    /// `VACUUM` (which may renumber the rows it follows); on MongoDB the lower-cased names,
    /// after a rolling upgrade (an earlier version's renames leave them stale).
    Reindex,
}

fn main() -> ExitCode {
    // Before the arguments are parsed: `healthcheck` takes its port from PORT, which may be
    // set in .env.
    if let Err(e) = config::load_dotenv() {
        eprintln!("user-service: {e}");
        return ExitCode::from(2);
    }
    let cli = Cli::parse();
    if let Some(Command::Healthcheck { port }) = cli.command {
        return match port.map_or_else(config::port_from_env, Ok) {
            Ok(port) => healthcheck(port),
            Err(e) => {
                eprintln!("user-service: {e}");
                ExitCode::from(2)
            }
        };
    }
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("user-service: {e}");
            return ExitCode::from(2);
        }
    };
    let output = match cli.command {
        None | Some(Command::Serve) => LogOutput::Stdout,
        Some(_) => LogOutput::Stderr,
    };
    let _log_guard = telemetry::init(settings.log_format, &settings.log_filter, output);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("user-service: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Some(Command::CreateAdmin { email, name }) => admin_from_args(&email, &name)
            .and_then(|admin| runtime.block_on(create_admin(settings, admin))),
        Some(Command::Import { file }) => import(&runtime, settings, &file),
        Some(Command::Export) => {
            existing(&settings, "export").and_then(|()| export(&runtime, settings))
        }
        Some(Command::Backup { file }) => {
            existing(&settings, "back up").and_then(|()| runtime.block_on(backup(settings, file)))
        }
        Some(Command::Reindex) => {
            existing(&settings, "reindex").and_then(|()| runtime.block_on(reindex(settings)))
        }
        _ => runtime.block_on(serve(settings)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "stopped");
            eprintln!("user-service: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Refuses a command that reads the embedded database when there is none: opening it would
/// make an empty one (a relative DATABASE_URL, from another directory), and an export of it
/// would look like a success.
fn existing(settings: &Settings, what: &str) -> anyhow::Result<()> {
    if let storage::DatabaseSettings::Sqlite { path } = &settings.database
        && !path.exists()
    {
        anyhow::bail!(
            "there is no database at {} (DATABASE_URL): nothing to {what}",
            path.display()
        );
    }
    Ok(())
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let app = Application::build(settings).await?;
    app.run_until_stopped().await?;
    tracing::info!("shut down");
    Ok(())
}

/// The admin to create: email and name from the arguments, the password from the first
/// line of standard input (read here, before any async work starts).
fn admin_from_args(email: &str, name: &str) -> anyhow::Result<NewAccount> {
    let email = Email::parse(email).map_err(|e| anyhow::anyhow!("--email {e}"))?;
    let name = DisplayName::parse(name).map_err(|e| anyhow::anyhow!("--name {e}"))?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let password = NewPassword::parse(line.trim_end_matches(['\r', '\n']))
        .map_err(|e| anyhow::anyhow!("the password {e}"))?;
    Ok(NewAccount {
        name,
        email,
        username: None,
        password,
    })
}

async fn reindex(settings: Settings) -> anyhow::Result<()> {
    match &settings.database {
        storage::DatabaseSettings::Sqlite { path } => {
            let indexed = storage::open_sqlite(path)
                .await?
                .rebuild_search_index()
                .await?;
            println!("the search index holds {indexed} users");
        }
        storage::DatabaseSettings::Mongo { url, database } => {
            let changed = storage::MongoRepository::connect(
                url.expose(),
                database,
                storage::MONGODB_STARTUP_TIMEOUT,
                settings.services.audit_retention,
            )
            .await?
            .rebuild_name_keys()
            .await?;
            println!("stored anew the lower-cased names that q searches: {changed} users");
        }
    }
    Ok(())
}

async fn backup(settings: Settings, file: PathBuf) -> anyhow::Result<()> {
    match &settings.database {
        storage::DatabaseSettings::Sqlite { path } => {
            storage::open_sqlite(path)
                .await?
                .back_up(file.clone())
                .await?;
            println!("backed up {} to {}", path.display(), file.display());
            Ok(())
        }
        storage::DatabaseSettings::Mongo { .. } => {
            anyhow::bail!("MongoDB is backed up with its own tools: mongodump, mongorestore")
        }
    }
}

async fn create_admin(settings: Settings, admin: NewAccount) -> anyhow::Result<()> {
    let services = services(settings).await?;
    let email = admin.email.clone();
    match services.users.ensure_admin(admin).await? {
        EnsuredAdmin::Created => {
            println!("created admin {email}");
            Ok(())
        }
        EnsuredAdmin::Exists | EnsuredAdmin::NotAnActiveAdmin => {
            anyhow::bail!("a user with email {email} exists already; it was left unchanged")
        }
    }
}

async fn services(settings: Settings) -> anyhow::Result<Services> {
    let repo = storage::connect(&settings.database, settings.services.audit_retention).await?;
    Services::new(settings.services, repo).await
}

/// Reads the file here, a batch of lines at a time, and hands each batch to the import.
fn import(runtime: &Runtime, settings: Settings, file: &Path) -> anyhow::Result<()> {
    let input: Box<dyn BufRead> = if file == Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        let opened = std::fs::File::open(file)
            .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", file.display()))?;
        Box::new(std::io::BufReader::with_capacity(1 << 20, opened))
    };
    let services = runtime.block_on(services(settings))?;
    let started = Instant::now();
    let mut report = ImportReport::default();
    let mut batch = Vec::with_capacity(BATCH);
    let mut lines = input.lines().enumerate();
    loop {
        let next = lines.next();
        if let Some((index, line)) = &next {
            let line = line
                .as_ref()
                .map_err(|e| anyhow::anyhow!("cannot read line {}: {e}", index + 1))?;
            if !line.trim().is_empty() {
                batch.push((*index as u64 + 1, line.clone()));
            }
        }
        if batch.len() == BATCH || (next.is_none() && !batch.is_empty()) {
            let done = runtime.block_on(services.transfer.import(std::mem::take(&mut batch)))?;
            for (line, reason) in &done.refused {
                eprintln!("line {line}: {reason}");
            }
            report.add(done);
        }
        if next.is_none() {
            break;
        }
    }
    // Closing the embedded database copies its write-ahead log into the file: part of the
    // import's time.
    drop(services);
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "imported {} users, {} already there, {} lines refused, in {seconds:.1} s ({:.0} lines/s)",
        report.created,
        report.existing,
        report.refused.len(),
        (report.created + report.existing + report.refused.len() as u64) as f64 / seconds.max(1e-9),
    );
    if report.refused.is_empty() {
        Ok(())
    } else {
        anyhow::bail!(
            "{} lines were refused (see above); the others were imported",
            report.refused.len()
        )
    }
}

/// Every user to standard output, a page at a time.
fn export(runtime: &Runtime, settings: Settings) -> anyhow::Result<()> {
    let services = runtime.block_on(services(settings))?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let (mut exported, mut with_mfa) = (0u64, 0u64);
    let mut after = None;
    loop {
        let page = runtime.block_on(services.transfer.export(after))?;
        for user in &page.users {
            serde_json::to_writer(&mut out, user)?;
            out.write_all(b"\n")?;
        }
        exported += page.users.len() as u64;
        with_mfa += page.with_mfa;
        after = page.next;
        if after.is_none() {
            break;
        }
    }
    out.flush()?;
    eprintln!("exported {exported} users");
    if with_mfa > 0 {
        eprintln!(
            "{with_mfa} of them had two-factor sign-in, which is not exported: they enrol again"
        );
    }
    Ok(())
}

/// A plain HTTP/1.0 request, so that the runtime image needs no curl or shell.
fn healthcheck(port: u16) -> ExitCode {
    let check = || -> std::io::Result<bool> {
        let mut stream =
            TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        stream.write_all(b"GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        Ok(response.starts_with("HTTP/1.1 200") || response.starts_with("HTTP/1.0 200"))
    };
    match check() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("healthcheck: {e}");
            ExitCode::FAILURE
        }
    }
}
