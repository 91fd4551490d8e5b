//! Conditional requests (RFC 9110 §13): a user's version as its `ETag`, and the `If-Match`
//! and `If-None-Match` headers read into the services' [`Precondition`]s.

use std::future::{Ready, ready};

use actix_web::{
    FromRequest, HttpRequest, HttpResponse, HttpResponseBuilder,
    dev::Payload,
    http::header::{self, HeaderName},
};

use super::error::ApiError;
use crate::domain::{Precondition, User, Version};

/// The entity tag of a version: strong, opaque.
pub fn etag(version: &Version) -> String {
    format!("\"{}\"", version.as_str())
}

/// A response of `builder` carrying `user` (as shown at `at`) with its `ETag`.
pub fn tagged(
    mut builder: HttpResponseBuilder,
    user: &User,
    at: time::OffsetDateTime,
) -> HttpResponseBuilder {
    builder.insert_header((header::ETAG, etag(&user.version(at))));
    builder
}

/// The entity tags of one header field value: `*`, or a list of `"tag"` and `W/"tag"`; what
/// is neither is skipped (it matches nothing). The flag says which tags are weak.
fn entity_tags(value: &str) -> Option<Vec<(bool, &str)>> {
    if value.trim() == "*" {
        return None;
    }
    let mut tags = Vec::new();
    let mut rest = value;
    loop {
        rest = rest.trim_start_matches([',', ' ', '\t']);
        if rest.is_empty() {
            return Some(tags);
        }
        let (weak, after) = match rest.strip_prefix("W/") {
            Some(after) => (true, after),
            None => (false, rest),
        };
        match after
            .strip_prefix('"')
            .and_then(|quoted| quoted.split_once('"'))
        {
            Some((tag, tail)) => {
                tags.push((weak, tag));
                rest = tail;
            }
            // Not an entity tag: skip to the next list member.
            None => rest = after.split_once(',').map_or("", |(_, tail)| tail),
        }
    }
}

/// The condition of header `name`, `None` when the request has no such field. `weak`:
/// whether weak tags count (weak comparison, `If-None-Match`) or never match (strong
/// comparison, `If-Match`).
fn condition(req: &HttpRequest, name: &HeaderName, weak: bool) -> Option<Precondition> {
    let mut values = req.headers().get_all(name).peekable();
    values.peek()?;
    let mut versions = Vec::new();
    for value in values {
        // A value that is not visible ASCII names no version of ours.
        let Ok(value) = value.to_str() else { continue };
        match entity_tags(value) {
            None => return Some(Precondition::Any),
            Some(tags) => versions.extend(
                tags.into_iter()
                    .filter(|(is_weak, _)| weak || !is_weak)
                    .map(|(_, tag)| Version::from_opaque(tag)),
            ),
        }
    }
    Some(Precondition::OneOf(versions))
}

/// `If-Match`: the versions a write may apply to (strong comparison).
pub struct IfMatch(pub Option<Precondition>);

impl FromRequest for IfMatch {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(Ok(Self(condition(req, &header::IF_MATCH, false))))
    }
}

/// `If-None-Match`: the versions the client holds already (weak comparison).
pub struct IfNoneMatch(pub Option<Precondition>);

impl FromRequest for IfNoneMatch {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(Ok(Self(condition(req, &header::IF_NONE_MATCH, true))))
    }
}

/// 304 with the current `ETag`, when the client holds the current version already.
pub fn not_modified(
    if_none_match: &IfNoneMatch,
    user: &User,
    at: time::OffsetDateTime,
) -> Option<HttpResponse> {
    let current = user.version(at);
    let held = if_none_match.0.as_ref()?;
    held.holds_for(&current).then(|| {
        HttpResponse::NotModified()
            .insert_header((header::ETAG, etag(&current)))
            .finish()
    })
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::*;

    fn if_match(values: &[&str]) -> Option<Precondition> {
        let mut req = TestRequest::default();
        for value in values {
            req = req.append_header((header::IF_MATCH, *value));
        }
        condition(&req.to_http_request(), &header::IF_MATCH, false)
    }

    fn one_of(tags: &[&str]) -> Option<Precondition> {
        Some(Precondition::OneOf(
            tags.iter().map(|t| Version::from_opaque(t)).collect(),
        ))
    }

    #[test]
    fn lists_of_tags_stars_and_weak_tags() {
        assert_eq!(if_match(&[]), None);
        assert_eq!(if_match(&["*"]), Some(Precondition::Any));
        assert_eq!(if_match(&[" * "]), Some(Precondition::Any));
        assert_eq!(if_match(&["\"a\""]), one_of(&["a"]));
        assert_eq!(
            if_match(&["\"a\", W/\"b\" ,\"c,d\""]),
            one_of(&["a", "c,d"])
        );
        assert_eq!(if_match(&["\"a\"", "\"b\""]), one_of(&["a", "b"]));
        assert_eq!(if_match(&["garbage, \"x\""]), one_of(&["x"]));
        assert_eq!(if_match(&["W/\"a\""]), one_of(&[]));
        assert_eq!(if_match(&[""]), one_of(&[]));
        let req = TestRequest::default()
            .append_header((header::IF_NONE_MATCH, "W/\"a\""))
            .to_http_request();
        assert_eq!(
            condition(&req, &header::IF_NONE_MATCH, true),
            one_of(&["a"])
        );
    }
}
