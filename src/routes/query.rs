//! Query-string values shared by the listings: each bad one is a 400 naming it.

use super::error::ApiError;
use crate::services::Position;

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

/// `per_page` and where the page starts: `page` (default 1) or `after`, never both.
pub fn paging(
    page: Option<String>,
    per_page: Option<String>,
    after: Option<String>,
) -> Result<(u32, Position), ApiError> {
    let per_page = number("per_page", per_page, 20, MAX_PER_PAGE)?;
    let position = match (page, after) {
        (Some(_), Some(_)) => return Err(bad("after", "cannot go with page")),
        (_, Some(after)) if after.is_empty() => return Err(bad("after", "must not be empty")),
        (_, Some(after)) => Position::After(after),
        (page, None) => Position::Page(number("page", page, 1, MAX_PAGE)?),
    };
    Ok((per_page, position))
}
