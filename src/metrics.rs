//! Prometheus metrics: HTTP requests by route pattern, latency, logins, rate limiting and
//! database errors. One process-wide registry, rendered at `GET /metrics`.

use std::{sync::LazyLock, time::Instant};

use actix_web::{
    Error, HttpResponse,
    body::MessageBody,
    dev::{ServiceRequest, ServiceResponse},
    get,
    middleware::Next,
};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry, TextEncoder,
};

struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    logins: IntCounterVec,
    rate_limited: IntCounter,
    database_errors: IntCounterVec,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let registry = Registry::new();
    let requests = IntCounterVec::new(
        Opts::new(
            "http_requests_total",
            "HTTP requests by method, route pattern and status",
        ),
        &["method", "route", "status"],
    )
    .expect("valid metric");
    let latency = HistogramVec::new(
        HistogramOpts::new("http_request_duration_seconds", "HTTP request latency").buckets(vec![
            0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ]),
        &["method", "route"],
    )
    .expect("valid metric");
    let logins = IntCounterVec::new(
        Opts::new("user_service_logins_total", "Login attempts by outcome"),
        &["outcome"],
    )
    .expect("valid metric");
    let rate_limited = IntCounter::new(
        "user_service_rate_limited_total",
        "Requests refused by the rate limit",
    )
    .expect("valid metric");
    let database_errors = IntCounterVec::new(
        Opts::new(
            "user_service_database_errors_total",
            "Failed database calls by kind",
        ),
        &["kind"],
    )
    .expect("valid metric");
    // Every known label value starts at 0, so that rates and alerts work from the start.
    for outcome in ["success", "failure"] {
        logins.with_label_values(&[outcome]);
    }
    for kind in ["unavailable", "internal"] {
        database_errors.with_label_values(&[kind]);
    }
    for collector in [
        Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
        Box::new(latency.clone()),
        Box::new(logins.clone()),
        Box::new(rate_limited.clone()),
        Box::new(database_errors.clone()),
    ] {
        registry
            .register(collector)
            .expect("metric registered once");
    }
    Metrics {
        registry,
        requests,
        latency,
        logins,
        rate_limited,
        database_errors,
    }
});

pub fn record_login(outcome: &'static str) {
    METRICS.logins.with_label_values(&[outcome]).inc();
}

pub fn record_rate_limited() {
    METRICS.rate_limited.inc();
}

pub fn record_database_error(kind: &'static str) {
    METRICS.database_errors.with_label_values(&[kind]).inc();
}

/// Middleware: counts, times and logs every request under its route pattern
/// (`/api/users/{id}`), never the raw path, so ids do not explode the series. The log line
/// carries the request id through the span tracing-actix-web opened around it.
pub async fn track(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let started = Instant::now();
    // Clients can invent methods; only the standard ones become label values.
    let method: &'static str = match req.method().as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        _ => "OTHER",
    };
    let response = next.call(req).await?;
    let route = response
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned());
    let status = response.status().as_u16().to_string();
    METRICS
        .requests
        .with_label_values(&[method, &route, &status])
        .inc();
    let latency = started.elapsed();
    METRICS
        .latency
        .with_label_values(&[method, &route])
        .observe(latency.as_secs_f64());
    let status = response.status().as_u16();
    let latency_ms = latency.as_secs_f64() * 1000.0;
    // Probes and scrapes come every few seconds; they would drown the other lines.
    if matches!(route.as_str(), "/health" | "/ready" | "/metrics") {
        tracing::debug!(method, route, status, latency_ms, "request completed");
    } else {
        tracing::info!(method, route, status, latency_ms, "request completed");
    }
    Ok(response)
}

/// Prometheus text format.
#[utoipa::path(
    tag = "operations", operation_id = "metrics",
    responses((status = 200, description = "Prometheus metrics", content_type = "text/plain", body = String))
)]
#[get("/metrics")]
pub async fn metrics() -> HttpResponse {
    let encoder = TextEncoder::new();
    let mut body = Vec::new();
    match encoder.encode(&METRICS.registry.gather(), &mut body) {
        Ok(()) => HttpResponse::Ok()
            .content_type(encoder.format_type())
            .body(body),
        Err(e) => {
            tracing::error!(error = %e, "metrics could not be encoded");
            crate::error::Problem::new(
                actix_web::http::StatusCode::INTERNAL_SERVER_ERROR,
                "internal server error",
            )
            .response()
        }
    }
}
