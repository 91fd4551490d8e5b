//! What wraps every request: client IP, rate limit, the request's span and its access log,
//! HEAD as GET, plain-text errors as problem documents.

mod access_log;
mod client_ip;
mod head;
mod plain_errors;
mod rate_limit;
mod request_span;

pub use access_log::track;
pub use client_ip::ClientIp;
pub use head::head_as_get;
pub use plain_errors::as_problem;
pub use rate_limit::RateLimit;
pub use request_span::RequestSpan;
