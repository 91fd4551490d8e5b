//! Per-client rate limiting with actix-governor, keyed on the client's IP address.

use std::{net::IpAddr, sync::Arc, time::Duration};

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
use ipnet::IpNet;

use crate::{config::RateLimitSettings, error::Problem};

/// The client's address: the socket peer, unless the peer is a trusted proxy, in which case
/// the nearest address in `X-Forwarded-For` that is not itself a trusted proxy.
#[derive(Clone, Debug)]
pub struct ClientIp {
    trusted_proxies: Arc<[IpNet]>,
}

impl ClientIp {
    pub fn new(trusted_proxies: &[IpNet]) -> Self {
        Self {
            trusted_proxies: trusted_proxies.into(),
        }
    }

    fn is_trusted(&self, ip: &IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(ip))
    }

    /// Walks `X-Forwarded-For` from the right (the hop nearest to us): every trusted proxy
    /// appends what it saw, so the first untrusted address is the one nobody could forge.
    pub fn resolve(&self, peer: IpAddr, forwarded_for: Option<&str>) -> IpAddr {
        if !self.is_trusted(&peer) {
            return peer;
        }
        let mut client = peer;
        for hop in forwarded_for.unwrap_or_default().rsplit(',') {
            match hop.trim().parse::<IpAddr>() {
                Ok(ip) => {
                    client = ip;
                    if !self.is_trusted(&ip) {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        client
    }
}

impl KeyExtractor for ClientIp {
    type Key = IpAddr;
    type KeyExtractionError = SimpleKeyExtractionError<&'static str>;

    fn extract(&self, req: &ServiceRequest) -> Result<Self::Key, Self::KeyExtractionError> {
        let peer = req
            .peer_addr()
            .map(|addr| addr.ip())
            .ok_or_else(|| SimpleKeyExtractionError::new("no peer address"))?;
        let forwarded = req
            .headers()
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok());
        Ok(self.resolve(peer, forwarded))
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
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, retry_after.into());
        response
    }
}

pub type RateLimitConfig = GovernorConfig<ClientIp, NoOpMiddleware<QuantaInstant>>;

/// The governor configuration; `None` when the limit is switched off.
pub fn config(settings: RateLimitSettings, client_ip: ClientIp) -> Option<RateLimitConfig> {
    if !settings.enabled() {
        return None;
    }
    // One request's worth of quota comes back every 1/rate seconds.
    let period = Duration::from_nanos((1_000_000_000 / u64::from(settings.per_second)).max(1));
    GovernorConfigBuilder::default()
        .period(period)
        .burst_size(settings.burst)
        .key_extractor(client_ip)
        .finish()
}

/// The middleware: the limit when configured, a pass-through when switched off.
pub fn middleware(
    config: Option<&RateLimitConfig>,
) -> Condition<Governor<ClientIp, NoOpMiddleware<QuantaInstant>>> {
    match config {
        Some(config) => Condition::new(true, Governor::new(config)),
        None => {
            let idle = GovernorConfigBuilder::default()
                .key_extractor(ClientIp::new(&[]))
                .finish()
                .expect("the default quota is valid");
            Condition::new(false, Governor::new(&idle))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn untrusted_peers_are_the_client() {
        let client_ip = ClientIp::new(&[]);
        assert_eq!(
            client_ip.resolve(ip("1.2.3.4"), Some("9.9.9.9")),
            ip("1.2.3.4")
        );
    }

    #[test]
    fn trusted_proxies_pass_on_the_nearest_untrusted_hop() {
        let client_ip = ClientIp::new(&["10.0.0.0/8".parse().unwrap()]);
        // The client forged the first entry; 10.0.0.2 is another proxy of ours.
        let header = "6.6.6.6, 1.2.3.4, 10.0.0.2";
        assert_eq!(
            client_ip.resolve(ip("10.0.0.1"), Some(header)),
            ip("1.2.3.4")
        );
        assert_eq!(client_ip.resolve(ip("10.0.0.1"), None), ip("10.0.0.1"));
        assert_eq!(
            client_ip.resolve(ip("10.0.0.1"), Some("garbage")),
            ip("10.0.0.1")
        );
    }
}
