//! Per-client rate limiting with actix-governor, keyed on the client's IP address.

use std::{net::IpAddr, time::Duration};

use super::ClientIp;
use crate::{config::RateLimitSettings, routes::Problem};
use actix_governor::{
    Governor, GovernorConfig, GovernorConfigBuilder, KeyExtractor, SimpleKeyExtractionError,
    governor::{
        NotUntil,
        clock::{Clock, DefaultClock, QuantaInstant},
        middleware::NoOpMiddleware,
    },
};
use actix_web::{
    HttpResponse, HttpResponseBuilder,
    dev::ServiceRequest,
    http::{StatusCode, header},
    middleware::Condition,
};

impl KeyExtractor for ClientIp {
    type Key = IpAddr;
    type KeyExtractionError = SimpleKeyExtractionError<&'static str>;

    fn extract(&self, req: &ServiceRequest) -> Result<Self::Key, Self::KeyExtractionError> {
        self.of(req)
            .ok_or_else(|| SimpleKeyExtractionError::new("no peer address"))
    }

    fn exceed_rate_limit_response(
        &self,
        negative: &NotUntil<QuantaInstant>,
        _response: HttpResponseBuilder,
    ) -> HttpResponse {
        let wait = negative.wait_time_from(DefaultClock::default().now());
        // Whole seconds, rounded up, at least 1: the wait may be over by the time it is read
        // here, and `Retry-After: 0` would invite an immediate retry.
        let retry_after = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
        crate::metrics::record_rate_limited();
        let mut response = Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("too many requests; retry in {retry_after} s"),
        )
        .response();
        let headers = response.headers_mut();
        headers.insert(header::RETRY_AFTER, retry_after.into());
        // As every answer of the API carries: the limiter answers before the scopes that
        // add it.
        headers.insert(
            header::CACHE_CONTROL,
            header::HeaderValue::from_static("no-store"),
        );
        response
    }
}

type Limiter = Governor<ClientIp, NoOpMiddleware<QuantaInstant>>;

/// The rate limit of every path but the probes, built once and shared by every worker.
pub struct RateLimit {
    config: GovernorConfig<ClientIp, NoOpMiddleware<QuantaInstant>>,
    enabled: bool,
}

impl RateLimit {
    pub fn new(settings: RateLimitSettings, client_ip: ClientIp) -> Self {
        let mut builder = GovernorConfigBuilder::default();
        if settings.enabled() {
            // One request's worth of quota comes back every 1/rate seconds.
            builder
                .period(Duration::from_nanos(
                    (1_000_000_000 / u64::from(settings.per_second)).max(1),
                ))
                .burst_size(settings.burst);
        }
        let config = builder
            .key_extractor(client_ip)
            .finish()
            .expect("a positive period and burst");
        Self {
            config,
            enabled: settings.enabled(),
        }
    }

    /// The middleware: the limit when configured, a pass-through when switched off.
    pub fn middleware(&self) -> Condition<Limiter> {
        Condition::new(self.enabled, Governor::new(&self.config))
    }

    /// Forgets clients that have their full quota back. Without this the limiter keeps an
    /// entry for every address it ever saw; call it now and then.
    pub fn forget_idle_clients(&self) {
        let limiter = self.config.limiter();
        limiter.retain_recent();
        limiter.shrink_to_fit();
    }
}
