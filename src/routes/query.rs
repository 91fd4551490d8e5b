//! Query-string values shared by the listings: each bad one is a 400 naming it.

use std::future::{Ready, ready};

use actix_web::{FromRequest, HttpRequest, dev::Payload, web};
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::services::Position;

/// The query string read as `T`, as `web::Query` reads it, except that a value that is not
/// UTF-8 once decoded (`q=%ff`) is a 400: `web::Query` puts U+FFFD in its place and goes on.
pub struct Params<T>(pub T);

impl<T: DeserializeOwned> FromRequest for Params<T> {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(params(req.query_string()))
    }
}

fn params<T: DeserializeOwned>(raw: &str) -> Result<Params<T>, ApiError> {
    let malformed = |why: &dyn std::fmt::Display| {
        ApiError::BadRequest(format!("malformed query string: {why}"))
    };
    // Decoding leaves `&` and `=` as they are: the whole is UTF-8 if and only if every name
    // and value is.
    if percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .is_err()
    {
        return Err(malformed(&"not UTF-8 once decoded"));
    }
    web::Query::<T>::from_query(raw)
        .map(|query| Params(query.into_inner()))
        .map_err(|e| malformed(&e))
}

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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn read(raw: &str) -> Result<HashMap<String, String>, String> {
        params(raw).map(|p| p.0).map_err(|e| e.to_string())
    }

    #[test]
    fn values_are_decoded_and_must_be_utf8() {
        let read_ok = read("q=mario%20rossi&sort=-name&x=%C3%A9+%E2%82%AC").unwrap();
        assert_eq!(read_ok["q"], "mario rossi");
        assert_eq!(read_ok["x"], "é €");
        for bad in ["q=%ff", "q=%C3", "%ff=1", "q=a%E2%82"] {
            assert!(read(bad).unwrap_err().contains("not UTF-8"), "{bad}");
        }
    }
}
