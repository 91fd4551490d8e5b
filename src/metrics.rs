//! Prometheus metrics: HTTP requests by route pattern, latency, logins, rate limiting and
//! database errors. One process-wide registry, rendered at `GET /metrics`. No HTTP here:
//! the request middleware and the route live in the HTTP layer.

use std::{cell::RefCell, collections::HashMap, sync::LazyLock, time::Duration};

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry,
    TextEncoder,
};

struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    logins: IntCounterVec,
    rate_limited: IntCounter,
    database_errors: IntCounterVec,
    background_failures: IntCounterVec,
    mail_failures: IntCounterVec,
    audit_failures: IntCounter,
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
    let background_failures = IntCounterVec::new(
        Opts::new(
            "user_service_background_failures_total",
            "Work done after the answer (such as a password reset) that failed for good",
        ),
        &["task"],
    )
    .expect("valid metric");
    for task in ["password_reset", "email_verification", "security_notice"] {
        background_failures.with_label_values(&[task]);
    }
    let mail_failures = IntCounterVec::new(
        Opts::new(
            "user_service_mail_failures_total",
            "Mails that could not be sent, by kind",
        ),
        &["kind"],
    )
    .expect("valid metric");
    for kind in [
        "password_reset",
        "email_verification",
        "password_changed",
        "email_changed",
        "mfa_enabled",
        "mfa_disabled",
    ] {
        mail_failures.with_label_values(&[kind]);
    }
    let audit_failures = IntCounter::new(
        "user_service_audit_write_failures_total",
        "Audit events that could not be written (the actions they describe stand)",
    )
    .expect("valid metric");
    // Every known label value starts at 0, so that rates and alerts work from the start.
    for outcome in ["success", "failure", "locked"] {
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
        Box::new(background_failures.clone()),
        Box::new(mail_failures.clone()),
        Box::new(audit_failures.clone()),
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
        background_failures,
        mail_failures,
        audit_failures,
    }
});

pub fn record_login(outcome: &'static str) {
    METRICS.logins.with_label_values(&[outcome]).inc();
}

pub fn record_background_failure(task: &'static str) {
    METRICS.background_failures.with_label_values(&[task]).inc();
}

pub fn record_mail_failure(kind: &'static str) {
    METRICS.mail_failures.with_label_values(&[kind]).inc();
}

pub fn record_audit_failure() {
    METRICS.audit_failures.inc();
}

pub fn record_rate_limited() {
    METRICS.rate_limited.inc();
}

pub fn record_database_error(kind: &'static str) {
    METRICS.database_errors.with_label_values(&[kind]).inc();
}

/// A request counter and latency histogram, for one method, route pattern and status.
struct RequestHandles {
    method: &'static str,
    status: u16,
    requests: IntCounter,
    latency: Histogram,
}

thread_local! {
    /// Each thread's handles on the request series it has met, by route pattern. A series
    /// is looked up in the registry (a hash of its labels, under a lock every core shares)
    /// once per thread, not on every request.
    static REQUEST_HANDLES: RefCell<HashMap<String, Vec<RequestHandles>>> =
        RefCell::default();
}

/// Counts and times one answered request under its route pattern.
pub fn observe_request(method: &'static str, route: &str, status: u16, latency: Duration) {
    REQUEST_HANDLES.with_borrow_mut(|routes| {
        // Not `entry`, which would copy the route on every request.
        let known = match routes.get_mut(route) {
            Some(known) => known,
            None => routes.entry(route.to_owned()).or_default(),
        };
        let at = match known
            .iter()
            .position(|h| h.method == method && h.status == status)
        {
            Some(at) => at,
            None => {
                known.push(RequestHandles {
                    method,
                    status,
                    requests: METRICS.requests.with_label_values(&[
                        method,
                        route,
                        &status.to_string(),
                    ]),
                    latency: METRICS.latency.with_label_values(&[method, route]),
                });
                known.len() - 1
            }
        };
        known[at].requests.inc();
        known[at].latency.observe(latency.as_secs_f64());
    });
}

/// Every metric in the Prometheus text format, with that format's content type.
pub fn render() -> Result<(String, Vec<u8>), prometheus::Error> {
    let encoder = TextEncoder::new();
    let mut body = Vec::new();
    encoder.encode(&METRICS.registry.gather(), &mut body)?;
    Ok((encoder.format_type().to_owned(), body))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The handles a thread keeps count each method, route and status apart, in the same
    /// series the registry renders.
    #[test]
    fn requests_are_counted_by_method_route_and_status() {
        let route = "/test/requests-are-counted";
        let took = Duration::from_millis(3);
        for (method, status) in [("GET", 200), ("GET", 404), ("GET", 200), ("POST", 200)] {
            observe_request(method, route, status, took);
        }
        let (_, body) = render().expect("rendered");
        let text = String::from_utf8(body).expect("text");
        let value = |series: String| -> String {
            text.lines()
                .find_map(|line| line.strip_prefix(&series))
                .unwrap_or_else(|| panic!("no {series} in {text}"))
                .trim()
                .to_owned()
        };
        let requests = |method: &str, status: u16| {
            value(format!(
                "http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}}"
            ))
        };
        assert_eq!(requests("GET", 200), "2");
        assert_eq!(requests("GET", 404), "1");
        assert_eq!(requests("POST", 200), "1");
        let timed = |method: &str| {
            value(format!(
                "http_request_duration_seconds_count{{method=\"{method}\",route=\"{route}\"}}"
            ))
        };
        assert_eq!(timed("GET"), "3");
        assert_eq!(timed("POST"), "1");
    }
}
