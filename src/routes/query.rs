//! Query-string values shared by the listings: each bad one is a 400 naming it.

use super::error::ApiError;

pub const MAX_PAGE: u32 = 1_000_000;
pub const MAX_PER_PAGE: u32 = 100;

pub fn bad(name: &str, rule: &str) -> ApiError {
    ApiError::BadRequest(format!("query parameter {name} {rule}"))
}

/// A whole number from 1 to `max`, or `default` when absent.
pub fn number(name: &str, raw: Option<String>, default: u32, max: u32) -> Result<u32, ApiError> {
    match raw {
        None => Ok(default),
        Some(raw) => raw
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| bad(name, &format!("must be a whole number from 1 to {max}"))),
    }
}
