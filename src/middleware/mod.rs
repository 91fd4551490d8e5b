//! What wraps every request: client IP, rate limit, the request's span and its access log.

mod access_log;
mod client_ip;
mod rate_limit;
mod request_span;

pub use access_log::track;
pub use client_ip::ClientIp;
pub use rate_limit::RateLimit;
pub use request_span::RequestSpan;
