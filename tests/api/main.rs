//! Black-box tests of the HTTP contract (/work/shared/API.md): each test starts the
//! service on a free port with its own database and talks to it over HTTP.
//!
//! Set `MONGODB_TEST_URI` to run the same suite against MongoDB.

mod helpers;

mod audit;
mod auth;
mod errors;
mod health;
mod idempotency;
mod lockout;
mod logs;
mod mfa;
mod pages;
mod paging;
mod password_reset;
mod rate_limit;
mod sessions;
mod signing;
mod startup;
mod users;
mod verification;
mod versions;
