//! The web pages' sign-in, under `/web`: not part of the public API (and not in the OpenAPI
//! document). A page keeps its access token in memory only; what keeps it signed in across
//! page loads is the refresh token in an `HttpOnly`, `SameSite=Strict` cookie that only
//! these endpoints read. They are the only endpoints that act on a cookie, so they are the
//! only ones that need a defence against cross-site requests: each is POST-only, takes
//! JSON only (a cross-site form cannot send it without a preflight), and refuses a request
//! whose `Origin` or `Sec-Fetch-Site` says it came from another site.

use std::{future::Future, pin::Pin};

use actix_web::{
    FromRequest, HttpRequest, HttpResponse,
    cookie::{Cookie, SameSite, time::Duration as CookieDuration},
    dev::Payload,
    http::header,
    web,
};
use serde::{Deserialize, Serialize};

use super::{
    AppState,
    auth::{LoginMfaRequest, LoginRequest, LoginResponse},
    error::ApiError,
    extract::{RequestOrigin, SignedIn},
    json::{FieldErrors, JsonBody},
    pages::only,
};
use crate::{
    domain::ParseError,
    services::{AccessToken, LoginOutcome, TokenPair},
};

/// The cookie that holds the refresh token.
pub const SESSION_COOKIE: &str = "user_service_session";
/// Sent only to the endpoints below, never to the API or the pages.
const COOKIE_PATH: &str = "/web/session";

/// How the web session cookie is set.
#[derive(Debug, Clone, Copy)]
pub struct WebSettings {
    /// `Secure` on the cookie: everywhere but in development, which runs on plain HTTP.
    pub secure_cookies: bool,
    /// How long the cookie lives: as long as the refresh token in it.
    pub session_ttl: std::time::Duration,
}

const POST: &[&str] = &["POST"];

pub fn configure(cfg: &mut web::ServiceConfig) {
    // Under the `/web` scope.
    cfg.service(only(POST, "/session", web::post().to(sign_in)))
        .service(only(POST, "/session/mfa", web::post().to(sign_in_mfa)))
        .service(only(POST, "/session/token", web::post().to(token)))
        .service(only(POST, "/session/logout", web::post().to(sign_out)))
        .service(only(POST, "/qr", web::post().to(qr_code)));
}

/// What a page gets for a session: an access token, never the refresh token.
#[derive(Debug, Serialize)]
struct AccessResponse {
    access_token: String,
    token_type: &'static str,
    expires_in: u64,
}

impl From<AccessToken> for AccessResponse {
    fn from(token: AccessToken) -> Self {
        Self {
            access_token: token.access_token,
            token_type: "Bearer",
            expires_in: token.expires_in,
        }
    }
}

/// Refuses a request another site made the browser send. Browsers send `Origin` with every
/// POST made by `fetch`, and `Sec-Fetch-Site` where they support it; a request with neither
/// did not come from our pages and is refused too.
fn same_origin(req: &HttpRequest) -> Result<(), ApiError> {
    let header = |name| {
        req.headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
    };
    if let Some(site) = header(header::HeaderName::from_static("sec-fetch-site"))
        && site != "same-origin"
    {
        return Err(ApiError::CrossSite);
    }
    let host = header(header::HOST).ok_or(ApiError::CrossSite)?;
    let origin = header(header::ORIGIN).ok_or(ApiError::CrossSite)?;
    // The scheme is left out: behind a TLS-terminating proxy the page is https while the
    // request reaching us is plain http. Host and port must match.
    let authority = url::Url::parse(origin)
        .ok()
        .filter(|url| matches!(url.scheme(), "http" | "https"))
        .and_then(|url| {
            let host = url.host_str()?.to_owned();
            Some(match url.port() {
                Some(port) => format!("{host}:{port}"),
                None => host,
            })
        });
    if authority.as_deref() == Some(host) {
        Ok(())
    } else {
        Err(ApiError::CrossSite)
    }
}

fn session_cookie(
    settings: &WebSettings,
    value: String,
    max_age: CookieDuration,
) -> Cookie<'static> {
    Cookie::build(SESSION_COOKIE, value)
        .path(COOKIE_PATH)
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(settings.secure_cookies)
        .max_age(max_age)
        .finish()
}

/// The cookie that removes the session cookie from the browser.
fn cleared_cookie(settings: &WebSettings) -> Cookie<'static> {
    session_cookie(settings, String::new(), CookieDuration::ZERO)
}

/// The answer to a finished sign-in: the access token in the body, the refresh token in
/// the cookie.
fn signed_in(settings: &WebSettings, pair: TokenPair) -> HttpResponse {
    let max_age =
        CookieDuration::seconds(i64::try_from(settings.session_ttl.as_secs()).unwrap_or(i64::MAX));
    let access = AccessToken {
        access_token: pair.access_token,
        expires_in: pair.expires_in,
    };
    HttpResponse::Ok()
        .cookie(session_cookie(settings, pair.refresh_token, max_age))
        .json(AccessResponse::from(access))
}

/// A request our own pages sent, which every endpoint here takes so that none can skip
/// the check: refused (403) when another site made the browser send it; then its JSON body
/// (415 for another type), and the session cookie if there is one.
struct PageRequest {
    body: JsonBody,
    session: Option<String>,
}

impl FromRequest for PageRequest {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let checked = same_origin(req);
        let session = req
            .cookie(SESSION_COOKIE)
            .map(|cookie| cookie.value().to_owned())
            .filter(|value| !value.is_empty());
        let body = JsonBody::from_request(req, payload);
        Box::pin(async move {
            checked?;
            Ok(Self {
                body: body.await?,
                session,
            })
        })
    }
}

/// Signs in with the body `POST /api/auth/login` takes; with MFA on, answers its second
/// step as the API does.
async fn sign_in(
    state: web::Data<AppState>,
    settings: web::Data<WebSettings>,
    RequestOrigin(origin): RequestOrigin,
    request: PageRequest,
) -> Result<HttpResponse, ApiError> {
    let (id, password) = request.body.parse::<LoginRequest>()?.credentials()?;
    Ok(match state.accounts.login(id, &password, &origin).await? {
        LoginOutcome::Tokens(pair) => signed_in(&settings, pair),
        second_step => HttpResponse::Ok().json(LoginResponse::from(second_step)),
    })
}

/// The second step, with the body `POST /api/auth/login/mfa` takes.
async fn sign_in_mfa(
    state: web::Data<AppState>,
    settings: web::Data<WebSettings>,
    RequestOrigin(origin): RequestOrigin,
    request: PageRequest,
) -> Result<HttpResponse, ApiError> {
    let (token, code) = request.body.parse::<LoginMfaRequest>()?.parts()?;
    let pair = state.accounts.login_mfa(&token, &code, &origin).await?;
    Ok(signed_in(&settings, pair))
}

/// A fresh access token for the cookie's session; the refresh token in it stays as it is,
/// so that any number of tabs can ask at once. The body is an empty JSON object: asking
/// for JSON keeps a cross-site form from reaching this at all.
async fn token(
    state: web::Data<AppState>,
    settings: web::Data<WebSettings>,
    RequestOrigin(origin): RequestOrigin,
    request: PageRequest,
) -> actix_web::Result<HttpResponse> {
    request.body.parse::<Empty>()?;
    // No cookie, no session to go on with: not a failure, since a page asks on every load
    // (a 401 would be logged in the browser's console each time).
    let Some(refresh_token) = request.session else {
        return Ok(HttpResponse::NoContent().finish());
    };
    match state.accounts.access_token(&refresh_token, &origin).await {
        Ok(access) => Ok(HttpResponse::Ok().json(AccessResponse::from(access))),
        Err(error) => {
            let mut response = HttpResponse::from_error(ApiError::from(error));
            // A session that is over leaves no cookie behind for the next page load to try
            // again. Not on 403: an address to confirm first keeps the session for after.
            if response.status() == actix_web::http::StatusCode::UNAUTHORIZED {
                response.add_cookie(&cleared_cookie(&settings))?;
            }
            Ok(response)
        }
    }
}

/// Ends the cookie's session and removes the cookie; 204 also without one.
async fn sign_out(
    state: web::Data<AppState>,
    settings: web::Data<WebSettings>,
    RequestOrigin(origin): RequestOrigin,
    request: PageRequest,
) -> Result<HttpResponse, ApiError> {
    request.body.parse::<Empty>()?;
    if let Some(refresh_token) = request.session {
        state.accounts.logout(&refresh_token, &origin).await?;
    }
    Ok(HttpResponse::NoContent()
        .cookie(cleared_cookie(&settings))
        .finish())
}

/// No fields.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QrRequest {
    text: Option<String>,
}

/// The longest text drawn: an `otpauth://` URL with a long issuer and email fits.
const MAX_QR_TEXT: usize = 512;

fn qr_text(text: &str) -> Result<String, ParseError> {
    if text.is_empty() || text.len() > MAX_QR_TEXT {
        return Err(ParseError::new("must be 1 to 512 bytes"));
    }
    Ok(text.to_owned())
}

/// The QR code of a text, as SVG: how the account page shows the `otpauth://` URL of an MFA
/// enrolment to a phone's camera. Drawn here, by the `qrcode` crate, so that the page needs
/// no script of its own for it; for signed-in users only.
async fn qr_code(SignedIn(_): SignedIn, body: JsonBody) -> Result<HttpResponse, ApiError> {
    let request = body.parse::<QrRequest>()?;
    let mut errors = FieldErrors::default();
    let text = errors.required("text", request.text.as_deref(), qr_text);
    let text = errors.finish(|| text)?;
    let code = qrcode::QrCode::new(text.as_bytes())
        .map_err(|e| ApiError::field("text", format!("cannot be drawn as a QR code: {e}")))?;
    let svg = code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(200, 200)
        .quiet_zone(true)
        .build();
    Ok(HttpResponse::Ok()
        .content_type("image/svg+xml")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(svg))
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::*;

    fn request(headers: &[(&'static str, &'static str)]) -> HttpRequest {
        let mut req = TestRequest::post().insert_header((header::HOST, "id.example.com:8443"));
        for header in headers {
            req = req.insert_header(*header);
        }
        req.to_http_request()
    }

    #[test]
    fn only_our_own_origin_passes() {
        for origin in ["https://id.example.com:8443", "http://id.example.com:8443"] {
            assert!(
                same_origin(&request(&[("origin", origin)])).is_ok(),
                "{origin}"
            );
        }
        assert!(
            same_origin(&request(&[
                ("origin", "https://id.example.com:8443"),
                ("sec-fetch-site", "same-origin"),
            ]))
            .is_ok()
        );
        for refused in [
            vec![],
            vec![("origin", "https://evil.example.com:8443")],
            vec![("origin", "https://id.example.com")],
            vec![("origin", "null")],
            vec![("origin", "file:///id.example.com:8443")],
            vec![
                ("origin", "https://id.example.com:8443"),
                ("sec-fetch-site", "same-site"),
            ],
            vec![("sec-fetch-site", "same-origin")],
        ] {
            assert!(
                matches!(same_origin(&request(&refused)), Err(ApiError::CrossSite)),
                "{refused:?}"
            );
        }
    }
}
