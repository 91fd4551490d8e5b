use actix_web::{HttpResponse, post, web};
use serde::{Deserialize, Serialize};

use super::{
    json::{FieldErrors, JsonBody},
    users::{CreateUserRequest, RegisterRequest, created},
};
use crate::{
    domain::{Email, Password, Username},
    error::AppError,
    services::{LoginId, TokenPair},
    state::AppState,
};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(register)
        .service(login)
        .service(refresh)
        .service(logout)
        .service(forgot_password)
        .service(reset_password);
}

#[derive(Debug, Serialize, Deserialize)]
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

#[post("/auth/register")]
async fn register(state: web::Data<AppState>, body: JsonBody) -> Result<HttpResponse, AppError> {
    if !state.settings.allow_registration {
        return Err(AppError::Forbidden("registration is closed".into()));
    }
    let input = CreateUserRequest::from(body.parse::<RegisterRequest>()?).into_domain()?;
    Ok(created(state.users.create(input).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginRequest {
    email: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

#[post("/auth/login")]
async fn login(state: web::Data<AppState>, body: JsonBody) -> Result<HttpResponse, AppError> {
    let request = body.parse::<LoginRequest>()?;
    let mut errors = FieldErrors::default();
    let id = match (request.email.as_deref(), request.username.as_deref()) {
        (Some(email), None) => errors
            .required("email", Some(email), Email::parse)
            .map(LoginId::Email),
        (None, Some(username)) => errors
            .required("username", Some(username), Username::parse)
            .map(LoginId::Username),
        (Some(_), Some(_)) => {
            errors.add("username", "send either email or username, not both");
            None
        }
        (None, None) => {
            errors.add("email", "email or username is required");
            None
        }
    };
    // Any non-empty string may be tried: length rules apply when a password is set.
    let password = errors.required("password", request.password.as_deref(), non_empty);
    let (id, password) = errors.finish(|| Some((id?, password?)))?;
    let pair = state.accounts.login(id, &password).await?;
    Ok(HttpResponse::Ok().json(TokenResponse::from(pair)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RefreshRequest {
    refresh_token: Option<String>,
}

impl RefreshRequest {
    fn token(self) -> Result<String, AppError> {
        let mut errors = FieldErrors::default();
        let token = errors.required("refresh_token", self.refresh_token.as_deref(), non_empty);
        errors.finish(|| token)
    }
}

fn non_empty(s: &str) -> Result<String, crate::domain::ParseError> {
    if s.is_empty() {
        Err(crate::domain::ParseError::new("must not be empty"))
    } else {
        Ok(s.to_owned())
    }
}

#[post("/auth/refresh")]
async fn refresh(state: web::Data<AppState>, body: JsonBody) -> Result<HttpResponse, AppError> {
    let token = body.parse::<RefreshRequest>()?.token()?;
    let pair = state.accounts.refresh(&token).await?;
    Ok(HttpResponse::Ok().json(TokenResponse::from(pair)))
}

#[post("/auth/logout")]
async fn logout(state: web::Data<AppState>, body: JsonBody) -> Result<HttpResponse, AppError> {
    let token = body.parse::<RefreshRequest>()?.token()?;
    state.accounts.logout(&token).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ForgotPasswordRequest {
    email: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct AcceptedResponse {
    pub message: &'static str,
}

#[post("/auth/forgot-password")]
async fn forgot_password(
    state: web::Data<AppState>,
    body: JsonBody,
) -> Result<HttpResponse, AppError> {
    let request = body.parse::<ForgotPasswordRequest>()?;
    let mut errors = FieldErrors::default();
    let email = errors.required("email", request.email.as_deref(), Email::parse);
    let email = errors.finish(|| email)?;
    state.accounts.forgot_password(&email).await?;
    Ok(HttpResponse::Accepted().json(AcceptedResponse {
        message: "if the address belongs to an account, a reset link is on its way",
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResetPasswordRequest {
    token: Option<String>,
    new_password: Option<String>,
}

#[post("/auth/reset-password")]
async fn reset_password(
    state: web::Data<AppState>,
    body: JsonBody,
) -> Result<HttpResponse, AppError> {
    let request = body.parse::<ResetPasswordRequest>()?;
    let mut errors = FieldErrors::default();
    let token = errors.required("token", request.token.as_deref(), non_empty);
    let password = errors.required(
        "new_password",
        request.new_password.as_deref(),
        Password::parse,
    );
    let (token, password) = errors.finish(|| Some((token?, password?)))?;
    state.accounts.reset_password(&token, &password).await?;
    Ok(HttpResponse::NoContent().finish())
}
