//! Counts, times and logs every request.

use std::time::Instant;

use actix_web::{
    Error, HttpMessage,
    body::MessageBody,
    dev::{ServiceRequest, ServiceResponse},
    middleware::Next,
};

use super::request_span::Route;
use crate::metrics;

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
    let route = req.extensions().get::<Route>().cloned();
    let response = next.call(req).await?;
    let route = route.map_or_else(|| "unmatched".to_owned(), |route| route.0);
    let status = response.status().as_u16();
    let latency = started.elapsed();
    metrics::observe_request(method, &route, status, latency);
    let latency_ms = latency.as_secs_f64() * 1000.0;
    // Probes and scrapes come every few seconds; they would drown the other lines.
    if matches!(route.as_str(), "/health" | "/ready" | "/metrics") {
        tracing::debug!(method, route, status, latency_ms, "request completed");
    } else {
        tracing::info!(method, route, status, latency_ms, "request completed");
    }
    Ok(response)
}
