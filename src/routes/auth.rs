use actix_web::{HttpRequest, HttpResponse, post, web};
use serde::{Deserialize, Serialize};
use utoipa::{
    ToSchema,
    openapi::{
        AllOfBuilder, ObjectBuilder, OneOfBuilder, RefOr, Schema, Type,
        schema::AdditionalProperties,
    },
};

use super::{
    AppState,
    error::{ApiError, Problem},
    extract::RequestOrigin,
    idempotency,
    json::{FieldErrors, JsonBody, nullable, text},
    schemas,
    users::{UserResponse, created, new_account, ok},
};
use crate::{
    domain::{Email, NewPassword, ParseError, Username},
    services::{IdempotencyScope, LoginId, LoginOutcome, TokenPair},
};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(register)
        .service(login)
        .service(login_mfa)
        .service(refresh)
        .service(logout)
        .service(forgot_password)
        .service(verify_email)
        .service(resend_verification)
        .service(reset_password);
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"access_token": "eyJhbGciOiJIUzI1NiJ9...", "token_type": "Bearer",
    "expires_in": 900, "refresh_token": "6k3Xz..."}))]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: String,
    pub expires_in: u64,
    pub refresh_token: String,
}

impl From<TokenPair> for TokenResponse {
    fn from(pair: TokenPair) -> Self {
        Self {
            access_token: pair.access_token,
            token_type: "Bearer".to_owned(),
            expires_in: pair.expires_in,
            refresh_token: pair.refresh_token,
        }
    }
}

#[utoipa::path(
    context_path = "/api", tag = "auth", operation_id = "register", summary = "Register",
    request_body = RegisterRequest,
    params(idempotency::KeyHeader),
    responses(
        (status = 201, description = "Registered, or the answer to the first request with this Idempotency-Key given again", body = UserResponse, headers(
            ("Location" = String, description = "/api/users/{id}"),
            ("ETag" = String, description = "The version of the user, for If-Match and If-None-Match"),
            ("Idempotent-Replayed" = String, description = "`true` when this is the stored answer of an earlier request with the same Idempotency-Key"),
        )),
        (status = 400, description = "Malformed JSON, or a malformed Idempotency-Key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Registration is switched off", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Email or username taken, or a request with this Idempotency-Key is still running (problem type ending in `idempotency-key-in-flight`, `Retry-After`)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Validation failed or unknown field (every bad field is listed), or this Idempotency-Key was used with another body (problem type ending in `idempotency-key-reused`)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/auth/register")]
pub(crate) async fn register(
    state: web::Data<AppState>,
    req: HttpRequest,
    RequestOrigin(origin): RequestOrigin,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    let registration = state.accounts.registration()?;
    let key = idempotency::key_of(&req)?;
    let bytes = body.bytes();
    let account = body.parse_then(|r: RegisterRequest| {
        let mut errors = FieldErrors::default();
        let account = new_account(
            &mut errors,
            r.name.as_deref(),
            r.email.as_deref(),
            r.password.as_deref(),
            r.username.as_deref(),
        );
        errors.finish(|| account)
    })?;
    let scope = IdempotencyScope::register();
    idempotency::once(&state, &req, key, scope, &bytes, async {
        Ok(created(registration.register(account, &origin).await?))
    })
    .await
}

/// Registration takes no role or active flag.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "Mario Rossi", "email": "mario@example.com",
    "password": "correct horse battery", "username": "mario"}))]
pub(crate) struct RegisterRequest {
    #[schema(schema_with = schemas::name, required = true)]
    name: Option<String>,
    #[schema(schema_with = schemas::email, required = true)]
    email: Option<String>,
    #[schema(schema_with = schemas::password, required = true)]
    password: Option<String>,
    #[schema(schema_with = schemas::optional_username)]
    username: Option<String>,
}

/// Exactly one of `email` and `username`, and the password.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LoginRequest {
    #[serde(default, deserialize_with = "nullable")]
    email: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    username: Option<Option<String>>,
    password: Option<String>,
}

/// Written by hand: a derive cannot say "exactly one of `email` and `username`".
impl utoipa::PartialSchema for LoginRequest {
    fn schema() -> RefOr<Schema> {
        let fields = ObjectBuilder::new()
            .schema_type(Type::Object)
            .property("email", schemas::email())
            .property("username", schemas::username())
            .property(
                "password",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .description(Some(
                        "Any non-empty string may be tried: the length rules apply when a \
                         password is set.",
                    ))
                    .min_length(Some(1)),
            )
            .required("password")
            .additional_properties(Some(AdditionalProperties::FreeForm(false)));
        let with = |field: &str| {
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .required(field)
        };
        AllOfBuilder::new()
            .schema_type(Type::Object)
            .description(Some(
                "Exactly one of `email` and `username`, and the password.",
            ))
            .examples([serde_json::json!(
                {"email": "mario@example.com", "password": "correct horse battery"}
            )])
            .item(fields)
            .item(
                OneOfBuilder::new()
                    .item(with("email"))
                    .item(with("username")),
            )
            .into()
    }
}

impl ToSchema for LoginRequest {}

#[utoipa::path(
    context_path = "/api", tag = "auth", operation_id = "login", summary = "Log in by email or username",
    request_body = LoginRequest,
    responses((status = 200, description = "Tokens, or with MFA on the second step (`mfa_required`)", body = LoginResponse), (status = 401, description = "Invalid credentials (one body for every reason)", body = Problem, content_type = "application/problem+json"), (status = 403, description = "REQUIRE_VERIFIED_EMAIL is on and the address is not verified yet (problem type ending in email-not-verified)", body = Problem, content_type = "application/problem+json"))
)]
#[post("/auth/login")]
pub(crate) async fn login(
    state: web::Data<AppState>,
    RequestOrigin(origin): RequestOrigin,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    let (id, password) = body.parse::<LoginRequest>()?.credentials()?;
    let outcome = state.accounts.login(id, &password, &origin).await?;
    Ok(HttpResponse::Ok().json(LoginResponse::from(outcome)))
}

impl LoginRequest {
    /// Who logs in and the password they gave; every bad field is reported at once.
    pub(super) fn credentials(self) -> Result<(LoginId, String), ApiError> {
        let mut errors = FieldErrors::default();
        // `null` is no way of leaving a field out: it is refused like any value of the wrong
        // type.
        let email = errors.not_null("email", text(&self.email), Email::parse);
        let username = errors.not_null("username", text(&self.username), Username::parse);
        let id = match (email, username) {
            (Some(Some(email)), Some(None)) => Some(LoginId::Email(email)),
            (Some(None), Some(Some(username))) => Some(LoginId::Username(username)),
            (Some(Some(_)), Some(Some(_))) => {
                errors.add("username", "send either email or username, not both");
                None
            }
            (Some(None), Some(None)) => {
                errors.add("email", "email or username is required");
                None
            }
            // A field was refused above.
            _ => None,
        };
        // Any non-empty string may be tried: length rules apply when a password is set.
        let password = errors.required("password", self.password.as_deref(), non_empty);
        errors.finish(|| Some((id?, password?)))
    }
}

impl From<LoginOutcome> for LoginResponse {
    fn from(outcome: LoginOutcome) -> Self {
        match outcome {
            LoginOutcome::Tokens(pair) => Self::Tokens(pair.into()),
            LoginOutcome::MfaRequired {
                mfa_token,
                expires_in,
            } => Self::MfaRequired(MfaRequiredResponse {
                mfa_required: true,
                mfa_token,
                expires_in,
            }),
        }
    }
}

/// The first step of a login with MFA on.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"mfa_required": true, "mfa_token": "Jq3v...", "expires_in": 300}))]
pub struct MfaRequiredResponse {
    /// Always `true`.
    pub mfa_required: bool,
    /// For `POST /api/auth/login/mfa`; works once, for `expires_in` seconds.
    pub mfa_token: String,
    pub expires_in: u64,
}

/// A login's answer: the token pair, or (MFA on) the second step.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub(crate) enum LoginResponse {
    Tokens(TokenResponse),
    MfaRequired(MfaRequiredResponse),
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LoginMfaRequest {
    /// From the login's first step.
    #[schema(required = true, nullable = false, min_length = 1)]
    mfa_token: Option<String>,
    /// The current 6-digit code of the authenticator, or an unused recovery code.
    #[schema(required = true, nullable = false, min_length = 1, max_length = 64)]
    code: Option<String>,
}

#[utoipa::path(
    context_path = "/api", tag = "auth", operation_id = "login_mfa", summary = "Second step of a login with MFA on",
    request_body = LoginMfaRequest,
    responses((status = 200, description = "Tokens", body = TokenResponse), (status = 401, description = "Wrong code, or an invalid, expired, used or voided mfa_token (problem type ending in mfa-token-invalid: the login starts again)", body = Problem, content_type = "application/problem+json"), (status = 429, description = "Login locked (problem type ending in login-locked)", body = Problem, content_type = "application/problem+json", headers(("Retry-After" = u64, description = "Seconds until the lock ends"))))
)]
#[post("/auth/login/mfa")]
pub(crate) async fn login_mfa(
    state: web::Data<AppState>,
    RequestOrigin(origin): RequestOrigin,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    let (token, code) = body.parse::<LoginMfaRequest>()?.parts()?;
    let pair = state.accounts.login_mfa(&token, &code, &origin).await?;
    Ok(HttpResponse::Ok().json(TokenResponse::from(pair)))
}

impl LoginMfaRequest {
    /// The `mfa_token` and the code, both checked.
    pub(super) fn parts(self) -> Result<(String, String), ApiError> {
        let mut errors = FieldErrors::default();
        let token = errors.required("mfa_token", self.mfa_token.as_deref(), non_empty);
        let code = errors.required("code", self.code.as_deref(), code);
        errors.finish(|| Some((token?, code?)))
    }
}

/// A TOTP or recovery code as sent: not empty, not long.
pub(super) fn code(s: &str) -> Result<String, ParseError> {
    match s.chars().count() {
        0 => Err(ParseError::new("must not be empty")),
        65.. => Err(ParseError::new("must be at most 64 characters")),
        _ => Ok(s.to_owned()),
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RefreshRequest {
    #[schema(required = true, nullable = false, min_length = 1)]
    refresh_token: Option<String>,
}

impl RefreshRequest {
    fn token(self) -> Result<String, ApiError> {
        let mut errors = FieldErrors::default();
        let token = errors.required("refresh_token", self.refresh_token.as_deref(), non_empty);
        errors.finish(|| token)
    }
}

fn non_empty(s: &str) -> Result<String, ParseError> {
    if s.is_empty() {
        Err(ParseError::new("must not be empty"))
    } else {
        Ok(s.to_owned())
    }
}

#[utoipa::path(
    context_path = "/api", tag = "auth", operation_id = "refresh", summary = "Rotate a refresh token for a new pair",
    request_body = RefreshRequest,
    responses((status = 200, description = "A new pair; the old refresh token stops working", body = TokenResponse), (status = 401, description = "Invalid, expired or revoked refresh token", body = Problem, content_type = "application/problem+json"), (status = 403, description = "REQUIRE_VERIFIED_EMAIL is on and the address is not verified yet (problem type ending in email-not-verified)", body = Problem, content_type = "application/problem+json"))
)]
#[post("/auth/refresh")]
pub(crate) async fn refresh(
    state: web::Data<AppState>,
    RequestOrigin(origin): RequestOrigin,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    let token = body.parse::<RefreshRequest>()?.token()?;
    let pair = state.accounts.refresh(&token, &origin).await?;
    Ok(HttpResponse::Ok().json(TokenResponse::from(pair)))
}

#[utoipa::path(
    context_path = "/api", tag = "auth", operation_id = "logout", summary = "Revoke a refresh token",
    request_body = RefreshRequest,
    responses((status = 204, description = "Revoked (also for unknown tokens)"))
)]
#[post("/auth/logout")]
pub(crate) async fn logout(
    state: web::Data<AppState>,
    RequestOrigin(origin): RequestOrigin,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    let token = body.parse::<RefreshRequest>()?.token()?;
    state.accounts.logout(&token, &origin).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EmailRequest {
    #[schema(schema_with = schemas::email, required = true)]
    email: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AcceptedResponse {
    pub message: &'static str,
}

#[utoipa::path(
    context_path = "/api", tag = "auth", operation_id = "forgot_password", summary = "Mail a password-reset link",
    request_body = EmailRequest,
    responses((status = 202, description = "The same answer whether or not the address is known", body = AcceptedResponse))
)]
#[post("/auth/forgot-password")]
pub(crate) async fn forgot_password(
    state: web::Data<AppState>,
    RequestOrigin(origin): RequestOrigin,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    state
        .accounts
        .forgot_password(body.parse::<EmailRequest>()?.email()?, origin);
    Ok(HttpResponse::Accepted().json(AcceptedResponse {
        message: "if the address belongs to an account, a reset link is on its way",
    }))
}

impl EmailRequest {
    fn email(self) -> Result<Email, ApiError> {
        let mut errors = FieldErrors::default();
        let email = errors.required("email", self.email.as_deref(), Email::parse);
        errors.finish(|| email)
    }
}

#[utoipa::path(
    context_path = "/api", tag = "auth", operation_id = "resend_verification", summary = "Mail a fresh email-verification link",
    request_body = EmailRequest,
    responses((status = 202, description = "The same answer whether or not the address is known or verified", body = AcceptedResponse))
)]
#[post("/auth/resend-verification")]
pub(crate) async fn resend_verification(
    state: web::Data<AppState>,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    state
        .accounts
        .resend_verification(body.parse::<EmailRequest>()?.email()?);
    Ok(HttpResponse::Accepted().json(AcceptedResponse {
        message: "if the address belongs to an account not verified yet, a link is on its way",
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct VerifyEmailRequest {
    /// The token from the mailed link.
    #[schema(required = true, nullable = false, min_length = 1)]
    token: Option<String>,
}

#[utoipa::path(
    context_path = "/api", tag = "auth", operation_id = "verify_email", summary = "Confirm an email address with the mailed token",
    request_body = VerifyEmailRequest,
    responses((status = 200, description = "The user, now with email_verified true", body = UserResponse), (status = 401, description = "Invalid, expired or used verification token", body = Problem, content_type = "application/problem+json"))
)]
#[post("/auth/verify-email")]
pub(crate) async fn verify_email(
    state: web::Data<AppState>,
    RequestOrigin(origin): RequestOrigin,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    let request = body.parse::<VerifyEmailRequest>()?;
    let mut errors = FieldErrors::default();
    let token = errors.required("token", request.token.as_deref(), non_empty);
    let token = errors.finish(|| token)?;
    Ok(ok(state.accounts.verify_email(&token, &origin).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResetPasswordRequest {
    /// The token from the mailed link.
    #[schema(required = true, nullable = false, min_length = 1)]
    token: Option<String>,
    #[schema(schema_with = schemas::password, required = true)]
    new_password: Option<String>,
}

#[utoipa::path(
    context_path = "/api", tag = "auth", operation_id = "reset_password", summary = "Set a new password with a reset token",
    request_body = ResetPasswordRequest,
    responses((status = 204, description = "Password changed; every session of the user is revoked"), (status = 401, description = "Invalid, expired or used reset token", body = Problem, content_type = "application/problem+json"))
)]
#[post("/auth/reset-password")]
pub(crate) async fn reset_password(
    state: web::Data<AppState>,
    RequestOrigin(origin): RequestOrigin,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    let request = body.parse::<ResetPasswordRequest>()?;
    let mut errors = FieldErrors::default();
    let token = errors.required("token", request.token.as_deref(), non_empty);
    let password = errors.required(
        "new_password",
        request.new_password.as_deref(),
        NewPassword::parse,
    );
    let (token, password) = errors.finish(|| Some((token?, password?)))?;
    state
        .accounts
        .reset_password(&token, &password, &origin)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}
