use std::{
    io::{BufRead, Read, Write},
    net::TcpStream,
    process::ExitCode,
    time::Duration,
};

use clap::{Parser, Subcommand};
use user_service::{
    config::{self, Settings},
    domain::{DisplayName, Email, Password},
    services::{NewAccount, Services},
    startup::Application,
    storage, telemetry,
};

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
        /// The port to ask; defaults to PORT or 8080.
        #[arg(long, env = "PORT", default_value_t = 8080)]
        port: u16,
    },
    /// Create an admin; the password is read from standard input.
    CreateAdmin {
        #[arg(long)]
        email: String,
        #[arg(long, default_value = "Administrator")]
        name: String,
    },
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
        return healthcheck(port);
    }
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("user-service: {e}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(settings.log_format);
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
    let password = Password::parse(line.trim_end_matches(['\r', '\n']))
        .map_err(|e| anyhow::anyhow!("the password {e}"))?;
    Ok(NewAccount {
        name,
        email,
        username: None,
        password,
    })
}

async fn create_admin(settings: Settings, admin: NewAccount) -> anyhow::Result<()> {
    let repo = storage::connect(&settings.database, settings.services.audit_retention).await?;
    let services = Services::new(settings.services, repo).await?;
    let email = admin.email.clone();
    if services.users.ensure_admin(admin).await? {
        println!("created admin {email}");
        Ok(())
    } else {
        anyhow::bail!("a user with email {email} exists already; it was left unchanged")
    }
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
