use actix_web::{
    Error, HttpMessage,
    body::MessageBody,
    dev::{ServiceRequest, ServiceResponse},
    http::header,
};
use tracing::{Span, field::Empty};
use tracing_actix_web::{DefaultRootSpanBuilder, RequestId, RootSpanBuilder};

use super::ClientIp;
use crate::routes::ClientAddress;

/// The route pattern a request matched (`/api/users/{id}`), or `unmatched`: found once,
/// when the request's span opens, and kept in its extensions for the access log.
#[derive(Debug, Clone)]
pub struct Route(pub String);

impl Route {
    fn of(request: &ServiceRequest) -> Self {
        Self(
            request
                .match_pattern()
                .unwrap_or_else(|| "unmatched".to_owned()),
        )
    }
}

/// The span around each request: tracing-actix-web's HTTP fields (not its OpenTelemetry
/// ones: nothing here exports spans), except that the target is the path without its query
/// string (a link such as `?token=…` must not reach the logs) and the
/// client IP is the one `TRUSTED_PROXIES` vouch for, not whatever `X-Forwarded-For` claims.
pub struct RequestSpan;

impl RootSpanBuilder for RequestSpan {
    fn on_request_start(request: &ServiceRequest) -> Span {
        let request_id = request
            .extensions()
            .get::<RequestId>()
            .map(ToString::to_string)
            .unwrap_or_default();
        let client_ip = request
            .app_data::<ClientIp>()
            .and_then(|resolver| resolver.of(request));
        if let Some(ip) = client_ip {
            // Resolved once here; handlers read it for sessions and the audit log.
            request.extensions_mut().insert(ClientAddress(ip));
        }
        let client_ip = client_ip.map(|ip| ip.to_string()).unwrap_or_default();
        let route = Route::of(request);
        request.extensions_mut().insert(route.clone());
        let user_agent = request
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        tracing::info_span!(
            "HTTP request",
            http.method = %request.method(),
            http.route = %route.0,
            http.target = %request.path(),
            http.client_ip = %client_ip,
            http.user_agent = %user_agent,
            http.status_code = Empty,
            request_id = %request_id,
            exception.message = Empty,
            exception.details = Empty,
        )
    }

    fn on_request_end<B: MessageBody>(span: Span, outcome: &Result<ServiceResponse<B>, Error>) {
        DefaultRootSpanBuilder::on_request_end(span, outcome);
    }
}
