//! Error answers made outside the service's own handlers without a body of ours (the CORS
//! middleware's refusals: a 400 whose body is one line of text) turned into problem
//! documents, as every other error is. HTML pages and problem documents pass untouched.

use actix_web::{
    Error,
    body::{BoxBody, EitherBody, MessageBody, to_bytes_limited},
    dev::{ServiceRequest, ServiceResponse},
    http::header::{self, HeaderValue},
    middleware::Next,
};

use crate::routes::Problem;

/// The longest plain-text body kept as a problem's `detail`.
const MAX_DETAIL_BYTES: usize = 1024;

/// Middleware.
pub async fn as_problem<B: MessageBody + 'static>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B, BoxBody>>, Error> {
    let response = next.call(req).await?;
    if !response.status().is_client_error() && !response.status().is_server_error() {
        return Ok(response.map_into_left_body());
    }
    let plain = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_none_or(|kind| kind.as_bytes().starts_with(b"text/plain"));
    if !plain {
        return Ok(response.map_into_left_body());
    }
    let (req, res) = response.into_parts();
    let status = res.status();
    let kept = res.headers().clone();
    let detail = match to_bytes_limited(res.into_body(), MAX_DETAIL_BYTES).await {
        Ok(Ok(bytes)) if !bytes.is_empty() => String::from_utf8_lossy(&bytes).into_owned(),
        _ => status.canonical_reason().unwrap_or("error").to_owned(),
    };
    let mut problem = Problem::new(status, detail).response();
    // Whatever else it said (Vary, the request id) still holds, but for what the problem
    // says itself (its type and length, and e.g. `WWW-Authenticate` on a 401).
    let own: Vec<_> = problem.headers().keys().cloned().collect();
    for (name, value) in &kept {
        if !own.contains(name) && name != header::CONTENT_LENGTH {
            problem.headers_mut().append(name.clone(), value.clone());
        }
    }
    if !problem.headers().contains_key(header::CACHE_CONTROL) {
        problem
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    Ok(ServiceResponse::new(req, problem).map_into_right_body())
}

#[cfg(test)]
mod tests {
    use actix_web::{
        App, HttpResponse,
        http::StatusCode,
        middleware::from_fn,
        test::{self, TestRequest},
        web,
    };

    use super::*;

    #[actix_web::test]
    async fn plain_errors_become_problems_and_the_rest_pass() {
        let app = test::init_service(
            App::new()
                .wrap(from_fn(as_problem))
                .route(
                    "/plain",
                    web::to(|| async {
                        HttpResponse::BadRequest()
                            .insert_header((header::VARY, "Origin"))
                            .body("Origin is not allowed to make this request")
                    }),
                )
                .route(
                    "/long",
                    web::to(|| async {
                        HttpResponse::Unauthorized()
                            .insert_header((header::WWW_AUTHENTICATE, "Bearer"))
                            .content_type("text/plain")
                            .body("x".repeat(MAX_DETAIL_BYTES + 1))
                    }),
                )
                .route(
                    "/html",
                    web::to(|| async {
                        HttpResponse::NotFound()
                            .content_type("text/html")
                            .body("<p>none</p>")
                    }),
                )
                .route(
                    "/fine",
                    web::to(|| async { HttpResponse::Ok().body("plain and fine") }),
                ),
        )
        .await;
        let call = |path: &'static str| {
            let app = &app;
            async move { test::call_service(app, TestRequest::get().uri(path).to_request()).await }
        };

        let plain = call("/plain").await;
        assert_eq!(plain.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            plain.headers().get(header::CONTENT_TYPE).unwrap(),
            "application/problem+json"
        );
        assert_eq!(plain.headers().get(header::VARY).unwrap(), "Origin");
        assert_eq!(
            plain.headers().get(header::CACHE_CONTROL).unwrap(),
            "no-store"
        );
        let body: serde_json::Value = test::read_body_json(plain).await;
        assert_eq!(body["status"], 400);
        assert_eq!(body["detail"], "Origin is not allowed to make this request");

        // Too long to be a detail; a header the problem sets itself is not doubled.
        let long = call("/long").await;
        assert_eq!(
            long.headers().get(header::CONTENT_TYPE).unwrap(),
            "application/problem+json"
        );
        assert_eq!(long.headers().get_all(header::WWW_AUTHENTICATE).count(), 1);
        let body: serde_json::Value = test::read_body_json(long).await;
        assert_eq!(body["detail"], "Unauthorized");

        let html = call("/html").await;
        assert_eq!(
            html.headers().get(header::CONTENT_TYPE).unwrap(),
            "text/html"
        );
        assert_eq!(test::read_body(html).await, "<p>none</p>");
        let fine = call("/fine").await;
        assert_eq!(test::read_body(fine).await, "plain and fine");
    }
}
