//! The application: storage, state, middleware and routes, bound to its own listener.

use std::{net::TcpListener, sync::Arc, time::Duration};

use actix_cors::Cors;
use actix_web::{
    App, HttpMessage, HttpServer,
    dev::Server,
    http::header::{self, HeaderName, HeaderValue},
    middleware::{Condition, DefaultHeaders, from_fn},
    web,
};
use anyhow::Context;
use tracing_actix_web::{RequestId, TracingLogger};

use crate::{
    config::{AppEnv, Settings},
    mail::MailTransport,
    middleware::{self, ClientIp, RateLimit, RequestSpan},
    routes::{self, AppState, WebSettings, json::MAX_BODY_BYTES},
    services::{AuditLog, EnsuredAdmin, Services},
    storage::{self, DynRepository},
};

pub struct Application {
    port: u16,
    server: Server,
}

impl Application {
    /// Connects to the configured database and binds `HOST:PORT` (port 0 picks a free one).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let repo = storage::connect(&settings.database, settings.services.audit_retention).await?;
        Self::build_with_repository(settings, repo).await
    }

    pub async fn build_with_repository(
        settings: Settings,
        repo: DynRepository,
    ) -> anyhow::Result<Self> {
        for warning in &settings.signing_key_warnings {
            tracing::warn!("{warning}");
        }
        if matches!(settings.services.mail.transport, MailTransport::Log) {
            tracing::warn!("SMTP_URL is not set: password reset links go to the log");
        }
        let state = web::Data::new(Services::new(settings.services.clone(), repo).await?);
        sweep_audit_log(state.audit.clone());
        if let Some(admin) = settings.admin.clone() {
            let email = admin.email.clone();
            let ensured = state.users.ensure_admin(admin).await.context(
                "could not create the admin that ADMIN_EMAIL and ADMIN_PASSWORD ask for",
            )?;
            match ensured {
                EnsuredAdmin::Created => {
                    tracing::info!(%email, "created the admin from ADMIN_EMAIL");
                }
                EnsuredAdmin::Exists => {}
                // Stopping would keep a service down whose admin was demoted on purpose.
                EnsuredAdmin::NotAnActiveAdmin => tracing::warn!(
                    %email,
                    "ADMIN_EMAIL names a user who is not an active admin, left as they are: \
                     the setting creates an admin once and never changes an existing user"
                ),
            }
        }
        let address = format!("{}:{}", settings.host, settings.port);
        let listener =
            TcpListener::bind(&address).with_context(|| format!("cannot listen on {address}"))?;
        let port = listener.local_addr()?.port();
        let server = server(listener, state, &settings)?;
        tracing::info!(%address, port, "listening");
        Ok(Self { port, server })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until SIGTERM or Ctrl-C, then finishes the requests in flight.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}

/// How often audit events past their retention are removed.
const AUDIT_SWEEP_INTERVAL: Duration = Duration::from_secs(3600);

/// Removes old audit events now and then every [`AUDIT_SWEEP_INTERVAL`], for as long as the
/// process runs. (MongoDB's TTL index does the same; there the sweep finds little.)
fn sweep_audit_log(audit: AuditLog) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(AUDIT_SWEEP_INTERVAL);
        loop {
            every.tick().await;
            match audit.sweep().await {
                Ok(0) => {}
                Ok(removed) => tracing::info!(removed, "removed audit events past their retention"),
                Err(e) => tracing::warn!(error = format!("{e:#}"), "the audit sweep failed"),
            }
        }
    });
}

fn cors(origins: &[String]) -> Cors {
    let mut cors = Cors::default()
        .allowed_methods(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"])
        .allowed_headers(routes::CORS_REQUEST_HEADERS)
        .expose_headers(routes::CORS_RESPONSE_HEADERS)
        .max_age(3600);
    for origin in origins {
        cors = if origin == "*" {
            cors.allow_any_origin()
        } else {
            cors.allowed_origin(origin)
        };
    }
    cors
}

fn server(
    listener: TcpListener,
    state: web::Data<AppState>,
    settings: &Settings,
) -> anyhow::Result<Server> {
    let client_ip = ClientIp::new(&settings.trusted_proxies);
    let rate_limit = Arc::new(RateLimit::new(settings.rate_limit, client_ip.clone()));
    let sweeper = Arc::clone(&rate_limit);
    tokio::spawn(async move {
        let mut every_minute = tokio::time::interval(std::time::Duration::from_secs(60));
        loop {
            every_minute.tick().await;
            sweeper.forget_idle_clients();
        }
    });
    let origins = settings.cors_origins.clone();
    let web_settings = web::Data::new(WebSettings {
        secure_cookies: settings.app_env != AppEnv::Development,
        session_ttl: settings.services.accounts.refresh_token_ttl,
    });
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(client_ip.clone())
            .app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
            .app_data(web_settings.clone())
            .configure(routes::configure_probes)
            // Everything else is under the rate limit, unknown paths included.
            .service(
                web::scope("")
                    .wrap(rate_limit.middleware())
                    .configure(routes::configure_documents)
                    .configure(routes::configure_pages)
                    .service(
                        web::scope("/web")
                            .wrap(DefaultHeaders::new().add((header::CACHE_CONTROL, "no-store")))
                            .configure(routes::configure_web),
                    )
                    .service(
                        web::scope("/api")
                            .wrap(DefaultHeaders::new().add((header::CACHE_CONTROL, "no-store")))
                            .configure(routes::configure_api),
                    ),
            )
            // Taken into each scope, under the rate limit too.
            .default_service(web::to(routes::not_found))
            .wrap(from_fn(middleware::head_as_get))
            .wrap(Condition::new(!origins.is_empty(), cors(&origins)))
            .wrap(from_fn(middleware::as_problem))
            .wrap(DefaultHeaders::new().add((header::X_CONTENT_TYPE_OPTIONS, "nosniff")))
            .wrap(from_fn(middleware::track))
            .wrap(from_fn(request_id_header))
            .wrap(TracingLogger::<RequestSpan>::new())
    })
    .shutdown_timeout(10)
    .listen(listener)?
    .run();
    Ok(server)
}

/// Echoes the request id that tracing-actix-web put on every log line of the request.
async fn request_id_header(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    let request_id = req.extensions().get::<RequestId>().copied();
    let mut response = next.call(req).await?;
    if let Some(value) = request_id.and_then(|id| HeaderValue::from_str(&id.to_string()).ok()) {
        response
            .headers_mut()
            .insert(HeaderName::from_static("x-request-id"), value);
    }
    Ok(response)
}
