//! The OpenAPI document, generated from the handlers' annotations, and the docs page.

use std::sync::LazyLock;

use actix_web::{HttpResponse, get, http::header, web};
use utoipa::{
    Modify, OpenApi,
    openapi::{
        self, ContentBuilder, Ref, ResponseBuilder,
        path::Operation,
        security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
    },
};
use utoipa_swagger_ui::{Config, SwaggerUi};

use super::error;
use super::{audit, auth, health, jwks, mfa, sessions, users};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "user-service",
        description = "User management and authentication. Every error is an RFC 9457 problem document.",
    ),
    paths(
        health::health, health::ready, health::metrics, openapi_json, docs, jwks::jwks,
        auth::register, auth::login, auth::login_mfa, auth::refresh, auth::logout, auth::forgot_password,
        auth::reset_password, auth::verify_email, auth::resend_verification,
        users::list_users, users::create_user, users::get_me, users::put_me, users::patch_me,
        users::delete_me, users::get_user, users::put_user, users::patch_user, users::delete_user,
        users::activate_user, users::deactivate_user, users::unlock_user,
        mfa::start_totp, mfa::confirm_totp, mfa::regenerate_recovery_codes, mfa::disable,
        mfa::reset,
        sessions::my_sessions, sessions::end_my_sessions, sessions::end_my_session,
        sessions::user_sessions, sessions::end_user_sessions,
        audit::list_events, audit::my_events,
    ),
    components(schemas(error::Problem, error::FieldError)),
    modifiers(&CommonResponses),
    tags(
        (name = "auth", description = "Registration, login, tokens, password reset"),
        (name = "users", description = "User CRUD and roles"),
        (name = "mfa", description = "Two-factor sign-in with TOTP"),
        (name = "sessions", description = "Signed-in sessions, and signing them out"),
        (name = "audit", description = "Security events"),
        (name = "keys", description = "Public keys that verify access tokens"),
        (name = "operations", description = "Health, readiness, metrics, docs"),
    )
)]
pub struct ApiDoc;

static DOCUMENT: LazyLock<openapi::OpenApi> = LazyLock::new(ApiDoc::openapi);

pub fn document() -> &'static openapi::OpenApi {
    &DOCUMENT
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(openapi_json)
        .service(docs)
        .service(SwaggerUi::new("/docs/{_:.*}").config(Config::new(["/api/openapi.json"])));
}

/// This document.
#[utoipa::path(
    tag = "operations", operation_id = "openapi",
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json", body = Object))
)]
#[get("/api/openapi.json")]
pub(crate) async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().json(document())
}

/// The human-readable API docs (Swagger UI, served from this binary).
#[utoipa::path(
    tag = "operations", operation_id = "docs",
    responses((status = 308, description = "To the docs page at /docs/", headers(("Location" = String))))
)]
#[get("/docs")]
pub(crate) async fn docs() -> HttpResponse {
    HttpResponse::PermanentRedirect()
        .insert_header((header::LOCATION, "/docs/"))
        .finish()
}

/// The methods the document lists for the path template that `path` fits, e.g.
/// `["GET", "PUT", "PATCH", "DELETE"]` for `/api/users/65f0c1e2a4b5c6d7e8f90123`.
pub fn allowed_methods(path: &str) -> Vec<&'static str> {
    let segments: Vec<&str> = path.split('/').collect();
    let fits = |template: &str| {
        let parts: Vec<&str> = template.split('/').collect();
        parts.len() == segments.len()
            && parts
                .iter()
                .zip(&segments)
                .all(|(t, s)| t == s || (t.starts_with('{') && !s.is_empty()))
    };
    let mut methods = Vec::new();
    for (_, item) in document().paths.paths.iter().filter(|(t, _)| fits(t)) {
        let present = [
            ("GET", item.get.is_some()),
            ("POST", item.post.is_some()),
            ("PUT", item.put.is_some()),
            ("PATCH", item.patch.is_some()),
            ("DELETE", item.delete.is_some()),
        ];
        for (method, _) in present.into_iter().filter(|(_, p)| *p) {
            if !methods.contains(&method) {
                methods.push(method);
            }
        }
    }
    methods
}

/// Adds what every operation can answer, so that the annotations list only what is
/// particular to each: problems for bad bodies and queries, 401 where a token is needed,
/// 429 on every path but the probes, 503 where the database is asked, 500 everywhere.
struct CommonResponses;

impl Modify for CommonResponses {
    fn modify(&self, api: &mut openapi::OpenApi) {
        api.components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                "bearer_auth",
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .bearer_format("JWT")
                        .build(),
                ),
            );
        for (path, item) in api.paths.paths.iter_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                add_common_responses(path, operation);
            }
        }
    }
}

fn add_common_responses(path: &str, operation: &mut Operation) {
    let has_body = operation.request_body.is_some();
    let has_query = operation
        .parameters
        .as_ref()
        .is_some_and(|p| {
            p.iter().any(|p| {
                matches!(p, openapi::RefOr::T(p) if p.parameter_in == openapi::path::ParameterIn::Query)
            })
        });
    let secured = operation.security.as_ref().is_some_and(|s| !s.is_empty());
    let api = path.starts_with("/api/") && path != "/api/openapi.json";
    let rate_limited = !health::PATHS.contains(&path);
    let mut add = |status: &str, description: &str, when: bool| {
        if when && !operation.responses.responses.contains_key(status) {
            operation
                .responses
                .responses
                .insert(status.to_owned(), problem(description).into());
        }
    };
    add(
        "400",
        "Malformed JSON or query parameter",
        has_body || has_query,
    );
    add(
        "401",
        "Missing, invalid, expired or revoked bearer token",
        secured,
    );
    add("413", "Body over 64 KiB", has_body);
    add("415", "Body is not application/json", has_body);
    add(
        "422",
        "Validation failed or unknown field; every bad field is listed",
        has_body,
    );
    add("500", "A bug; the body says nothing about internals", true);
    add(
        "503",
        "The database does not answer, or the password-hashing queue is full (`Retry-After`)",
        api || path == "/ready",
    );
    if rate_limited && !operation.responses.responses.contains_key("429") {
        let why = match operation.operation_id.as_deref() {
            Some("login") => {
                "Rate limited, or the account is locked after too many failed logins (problem \
                 type ending in `login-locked`)"
            }
            // These ask for `current_password`, whose tries count as logins do.
            Some(
                "put_me"
                | "patch_me"
                | "put_user"
                | "patch_user"
                | "start_totp"
                | "regenerate_recovery_codes"
                | "disable_mfa",
            ) => {
                "Rate limited, or the account is locked after too many failed logins or wrong \
                 current passwords (problem type ending in `login-locked`)"
            }
            _ => "Rate limited",
        };
        let limited = ResponseBuilder::from(problem(why))
            .header(
                "Retry-After",
                openapi::HeaderBuilder::new()
                    .schema(Some(
                        openapi::ObjectBuilder::new().schema_type(openapi::Type::Integer),
                    ))
                    .description(Some("Seconds to wait"))
                    .build(),
            )
            .build();
        operation
            .responses
            .responses
            .insert("429".to_owned(), limited.into());
    }
}

fn problem(description: &str) -> openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/problem+json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build(),
        )
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every route the source declares with an actix attribute must be in the document.
    #[test]
    fn every_route_is_documented() {
        let spec = serde_json::to_value(document()).unwrap();
        let paths = spec["paths"].as_object().unwrap();
        let sources = [
            ("/api", include_str!("auth.rs")),
            ("/api", include_str!("users.rs")),
            ("/api", include_str!("mfa.rs")),
            ("/api", include_str!("sessions.rs")),
            ("/api", include_str!("audit.rs")),
            ("", include_str!("health.rs")),
            ("", include_str!("docs.rs")),
            ("", include_str!("jwks.rs")),
        ];
        let mut checked = 0;
        for (prefix, source) in sources {
            for line in source.lines().map(str::trim) {
                for method in ["get", "post", "put", "patch", "delete"] {
                    let Some(rest) = line.strip_prefix(&format!("#[{method}(\"")) else {
                        continue;
                    };
                    let route = format!("{prefix}{}", rest.split('"').next().unwrap());
                    let documented = paths
                        .get(&route)
                        .and_then(|item| item.get(method))
                        .is_some();
                    assert!(
                        documented,
                        "{} {route} is not in the OpenAPI document",
                        method.to_uppercase()
                    );
                    checked += 1;
                }
            }
        }
        assert_eq!(
            checked, 40,
            "the number of routes changed: check this test's sources"
        );
    }

    #[test]
    fn allowed_methods_follow_the_document() {
        assert_eq!(allowed_methods("/api/auth/login"), ["POST"]);
        assert_eq!(
            allowed_methods("/api/users/65f0c1e2a4b5c6d7e8f90123"),
            ["GET", "PUT", "PATCH", "DELETE"]
        );
        assert!(allowed_methods("/api/nothing").is_empty());
        assert!(allowed_methods("/api/users//activate").is_empty());
    }

    /// The path ids' pattern is written out in each annotation: it must be the domain's.
    #[test]
    fn every_path_id_has_the_domain_pattern() {
        let spec = serde_json::to_value(document()).unwrap();
        let mut checked = 0;
        for (path, item) in spec["paths"].as_object().unwrap() {
            if !path.contains("{id}") {
                continue;
            }
            for (method, operation) in item.as_object().unwrap() {
                let ids: Vec<_> = operation["parameters"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|p| p["name"] == "id")
                    .collect();
                assert_eq!(ids.len(), 1, "{method} {path}");
                assert_eq!(ids[0]["required"], true, "{method} {path}");
                assert_eq!(
                    ids[0]["schema"]["pattern"],
                    crate::domain::UserId::PATTERN,
                    "{method} {path}"
                );
                checked += 1;
            }
        }
        assert_eq!(checked, 10);
    }

    #[test]
    fn api_operations_document_their_errors() {
        let spec = serde_json::to_value(document()).unwrap();
        let login = &spec["paths"]["/api/auth/login"]["post"]["responses"];
        for status in [
            "200", "400", "401", "413", "415", "422", "429", "500", "503",
        ] {
            assert!(login.get(status).is_some(), "login lacks {status}");
        }
        assert!(spec["components"]["securitySchemes"]["bearer_auth"].is_object());
    }
}
