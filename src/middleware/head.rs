//! HEAD answered as GET, by every route that answers GET (RFC 9110 §9.3.2: the same status
//! and headers, no body), where the routes list GET alone. The HTTP/1 codec noted the
//! request's method as it read it, and leaves the body out of the answer itself, keeping its
//! `Content-Length`.

use actix_web::{
    Error,
    body::MessageBody,
    dev::{ServiceRequest, ServiceResponse},
    http::Method,
    middleware::Next,
};

/// Middleware, inside those that log the request, so that they still see HEAD. Changing
/// the method in place needs the only handle on the request: no middleware outside this one
/// may keep a clone of it (`HttpRequest`) while the request runs, or every HEAD panics its
/// worker (the HTTP tests send HEAD through the whole stack, CORS on and off).
pub async fn head_as_get(
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    if req.method() == Method::HEAD {
        req.head_mut().method = Method::GET;
    }
    next.call(req).await
}
