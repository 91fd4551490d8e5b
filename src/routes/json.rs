//! Request bodies: one extractor that gives every failure its status and problem document.

use std::{future::Future, pin::Pin};

use actix_web::{FromRequest, HttpMessage, HttpRequest, dev::Payload, http::StatusCode, mime, web};
use serde::{
    Deserialize, Deserializer,
    de::{self, DeserializeOwned, MapAccess, SeqAccess, Visitor},
};
use serde_json::{Map, Value};

use super::error::{ApiError, FieldError};
use crate::{domain::ParseError, serde_fields::struct_fields, services::ServiceError};

/// Request bodies may not be larger than this (64 KiB).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A request body that is a JSON object: 415 for another content type, 413 past
/// [`MAX_BODY_BYTES`], 400 for malformed JSON, 422 for JSON that is not an object.
/// [`JsonBody::parse`] then checks its fields, so handlers can authorise before they validate.
pub struct JsonBody(Map<String, Value>, web::Bytes);

impl FromRequest for JsonBody {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let is_json = matches!(
            req.mime_type(),
            Ok(Some(m)) if m.type_() == mime::APPLICATION
                && (m.subtype() == mime::JSON || m.suffix() == Some(mime::JSON))
        );
        if !is_json {
            return Box::pin(async { Err(ApiError::UnsupportedMediaType) });
        }
        let bytes = web::Bytes::from_request(req, payload);
        Box::pin(async move {
            let bytes = bytes.await.map_err(|e| {
                if e.as_response_error().status_code() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge(MAX_BODY_BYTES)
                } else {
                    ApiError::BadRequest("the request body could not be read".into())
                }
            })?;
            match serde_json::from_slice::<UniqueKeys>(&bytes).map(|UniqueKeys(value)| value) {
                Ok(Value::Object(map)) => Ok(JsonBody(map, bytes)),
                Ok(_) => Err(ApiError::field("body", "must be a JSON object")),
                Err(e) => Err(ApiError::BadRequest(format!(
                    "the body is not valid JSON: {e}"
                ))),
            }
        })
    }
}

impl JsonBody {
    /// The body as it came, byte for byte (what an idempotency key's fingerprint covers).
    pub fn bytes(&self) -> web::Bytes {
        self.1.clone()
    }

    /// Deserialises into `T`, refusing every field `T` does not take (each one named) and a
    /// value of the wrong type (named by its path).
    pub fn parse<T: DeserializeOwned>(self) -> Result<T, ApiError> {
        self.parse_then(Ok)
    }

    /// [`JsonBody::parse`], then `validate`: unknown fields, fields of the wrong type and the
    /// fields `validate` refuses are reported together, so that the client hears of all at
    /// once.
    pub fn parse_then<T: DeserializeOwned, U>(
        self,
        validate: impl FnOnce(T) -> Result<U, ApiError>,
    ) -> Result<U, ApiError> {
        let accepted = struct_fields::<T>();
        let mut map = self.0;
        let mut errors: Vec<FieldError> = map
            .keys()
            .filter(|key| !accepted.contains(&key.as_str()))
            .map(|key| FieldError::new(key.as_str(), "is not an accepted field"))
            .collect();
        map.retain(|key, _| accepted.contains(&key.as_str()));
        // serde stops at the first value of the wrong type: each such field is named and
        // left out, and the rest read again, until they read (every field of a request is
        // optional to serde; which are required is for `validate` to say).
        let mut mistyped = Vec::new();
        let mut body = Value::Object(map);
        let value = loop {
            let error = match serde_path_to_error::deserialize(&body) {
                Ok(value) => break value,
                Err(e) => e,
            };
            errors.push(FieldError::new(
                error.path().to_string(),
                describe_type_error(&error.inner().to_string()),
            ));
            let left_out = match (&mut body, top_level_key(error.path())) {
                (Value::Object(map), Some(key)) => map.remove_entry(key),
                _ => None,
            };
            match left_out {
                Some((key, _)) => mistyped.push(key),
                None => return Err(ApiError::Validation(errors)),
            }
        };
        match validate(value) {
            Ok(value) if errors.is_empty() => Ok(value),
            Err(e) if errors.is_empty() => Err(e),
            // What `validate` says of a field left out (it is required, say) is said already.
            Err(ApiError::Validation(more)) => {
                errors.extend(
                    more.into_iter()
                        .filter(|error| !mistyped.iter().any(|key| within(&error.field, key))),
                );
                Err(ApiError::Validation(errors))
            }
            Ok(_) | Err(_) => Err(ApiError::Validation(errors)),
        }
    }
}

/// The body's own field a deserialisation error is in: the first step of its path.
fn top_level_key(path: &serde_path_to_error::Path) -> Option<&str> {
    match path.iter().next()? {
        serde_path_to_error::Segment::Map { key } => Some(key.as_str()),
        _ => None,
    }
}

/// Whether an error's field is `key` or lies within it (`key.a`, `key[0]`).
fn within(field: &str, key: &str) -> bool {
    field
        .strip_prefix(key)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
}

/// A JSON value in which no object repeats a key. serde_json would silently keep the last
/// of two, while a proxy, a WAF or a log in front of us may have read the first: such a body
/// means two different things, so it is refused (400), naming the key.
struct UniqueKeys(Value);

impl<'de> Deserialize<'de> for UniqueKeys {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(UniqueKeysVisitor)
            .map(UniqueKeys)
    }
}

struct UniqueKeysVisitor;

impl<'de> Visitor<'de> for UniqueKeysVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(UniqueKeys(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        while let Some(key) = entries.next_key::<String>()? {
            if map.contains_key(&key) {
                return Err(de::Error::custom(format_args!("duplicate key {key:?}")));
            }
            let UniqueKeys(value) = entries.next_value()?;
            map.insert(key, value);
        }
        Ok(Value::Object(map))
    }
}

/// serde's "invalid type: string \"hunter2\", expected a boolean" as "must be a boolean":
/// the message must not echo the value, which may be a password.
fn describe_type_error(message: &str) -> String {
    match message.split_once(", expected ") {
        Some((_, expected)) => format!("must be {expected}"),
        None => message.to_owned(),
    }
}

/// For `Option<Option<T>>` fields: absent stays `None`, `null` becomes `Some(None)`.
pub fn nullable<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// `Option<Option<String>>` as borrowed text.
pub fn text(value: &Option<Option<String>>) -> Option<Option<&str>> {
    value.as_ref().map(Option::as_deref)
}

/// Collects every bad field of a request, so that the client hears of all at once.
#[derive(Default)]
pub struct FieldErrors(Vec<FieldError>);

impl FieldErrors {
    /// A required field: missing, `null` or invalid are all errors.
    pub fn required<T>(
        &mut self,
        field: &str,
        value: Option<&str>,
        parse: impl FnOnce(&str) -> Result<T, ParseError>,
    ) -> Option<T> {
        match value {
            Some(value) => self.check(field, parse(value)),
            None => {
                self.0.push(FieldError::new(field, "is required"));
                None
            }
        }
    }

    /// An optional field: absent is fine, present must be valid.
    pub fn optional<T>(
        &mut self,
        field: &str,
        value: Option<&str>,
        parse: impl FnOnce(&str) -> Result<T, ParseError>,
    ) -> Option<Option<T>> {
        match value {
            Some(value) => self.check(field, parse(value)).map(Some),
            None => Some(None),
        }
    }

    /// A field of a partial update: absent leaves it alone, `null` is refused.
    pub fn not_null<T>(
        &mut self,
        field: &str,
        value: Option<Option<&str>>,
        parse: impl FnOnce(&str) -> Result<T, ParseError>,
    ) -> Option<Option<T>> {
        match value {
            None => Some(None),
            Some(None) => {
                self.0.push(FieldError::new(field, "must not be null"));
                None
            }
            Some(Some(value)) => self.check(field, parse(value)).map(Some),
        }
    }

    /// A typed (non-string) field of a partial update: absent is fine, `null` is refused.
    pub fn not_null_value<T>(
        &mut self,
        field: &str,
        value: Option<Option<T>>,
    ) -> Option<Option<T>> {
        match value {
            Some(None) => {
                self.0.push(FieldError::new(field, "must not be null"));
                None
            }
            other => Some(other.flatten()),
        }
    }

    pub fn add(&mut self, field: &str, message: impl Into<String>) {
        self.0.push(FieldError::new(field, message));
    }

    fn check<T>(&mut self, field: &str, result: Result<T, ParseError>) -> Option<T> {
        result
            .map_err(|e| self.0.push(FieldError::new(field, e.0)))
            .ok()
    }

    /// `Ok(value)` when no field was bad. `value` is built only then, so it may unwrap
    /// what the checks above produced.
    pub fn finish<T>(self, value: impl FnOnce() -> Option<T>) -> Result<T, ApiError> {
        if !self.0.is_empty() {
            return Err(ApiError::Validation(self.0));
        }
        value().ok_or_else(|| {
            ServiceError::internal(anyhow::anyhow!("a checked field was missing")).into()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Example {
        name: Option<String>,
        #[serde(default, deserialize_with = "nullable")]
        username: Option<Option<String>>,
    }

    fn body(value: Value) -> JsonBody {
        let Value::Object(map) = value else { panic!() };
        JsonBody(map, web::Bytes::new())
    }

    #[test]
    fn a_repeated_key_is_refused_and_named_at_any_depth() {
        for (body, key) in [
            (r#"{"email": "a@x.io", "email": "b@x.io"}"#, "email"),
            (r#"{"a": [{"b": 1, "b": 2}]}"#, "b"),
        ] {
            let error = serde_json::from_str::<UniqueKeys>(body)
                .err()
                .expect("refused")
                .to_string();
            assert!(
                error.contains(&format!("duplicate key \"{key}\"")),
                "{error}"
            );
        }
        let UniqueKeys(value) =
            serde_json::from_str(r#"{"a": [1, -2, 2.5, "x", true, null, {"a": {}}]}"#).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"a": [1, -2, 2.5, "x", true, null, {"a": {}}]})
        );
    }

    #[test]
    fn introspection_finds_the_declared_fields() {
        assert_eq!(struct_fields::<Example>(), ["name", "username"]);
    }

    #[test]
    fn every_unknown_field_is_named() {
        let Err(ApiError::Validation(errors)) =
            body(serde_json::json!({"name": "x", "role": "admin", "id": 1})).parse::<Example>()
        else {
            panic!("accepted")
        };
        let mut fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        fields.sort();
        assert_eq!(fields, ["id", "role"]);
    }

    #[test]
    fn wrong_types_are_named_by_path() {
        let Err(ApiError::Validation(errors)) =
            body(serde_json::json!({"name": 5})).parse::<Example>()
        else {
            panic!("accepted")
        };
        assert_eq!(errors[0].field, "name");
    }

    #[test]
    fn type_errors_do_not_echo_the_value() {
        let Err(ApiError::Validation(errors)) =
            body(serde_json::json!({"name": 12345678})).parse::<Example>()
        else {
            panic!("accepted")
        };
        assert_eq!(errors[0].message, "must be a string");
    }

    #[test]
    fn null_and_absent_differ() {
        let absent: Example = body(serde_json::json!({})).parse().unwrap();
        let null: Example = body(serde_json::json!({"username": null})).parse().unwrap();
        assert_eq!(absent.username, None);
        assert_eq!(null.username, Some(None));
    }

    #[test]
    fn all_bad_fields_are_reported_together() {
        let mut errors = FieldErrors::default();
        let a = errors.required("a", None, |s| Ok(s.to_owned()));
        let b = errors.required("b", Some("x"), |_| Err::<(), _>(ParseError::new("bad")));
        let c = errors.optional("c", None, |s| Ok(s.to_owned()));
        assert!(a.is_none() && b.is_none() && c == Some(None));
        let Err(ApiError::Validation(list)) = errors.finish(|| Some(())) else {
            panic!()
        };
        assert_eq!(list.len(), 2);
    }
}
