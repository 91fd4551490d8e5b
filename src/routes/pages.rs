//! The web pages: plain HTML, CSS and ES modules from `web/`, built into the binary so that
//! `cargo run` (or the release binary alone) serves them with nothing to build or install.
//! The pages talk to the JSON API like any other client; this module only hands out files.

use std::sync::LazyLock;

use actix_web::{
    HttpRequest, HttpResponse, Resource, Route, guard,
    http::{
        Method, StatusCode,
        header::{self, HeaderValue},
    },
    web,
};
use sha2::{Digest, Sha256};

use super::error::Problem;

/// Allows nothing from another origin, no inline script or style, no plugins, no framing.
/// `img-src data:` is for the QR code, which the account page shows as a `data:` URL.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; \
     frame-ancestors 'none'; base-uri 'none'";

/// A file of `web/`, with the type it is served as.
struct WebFile {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! web_file {
    ($path:literal, $content_type:expr) => {
        WebFile {
            path: $path,
            content_type: $content_type,
            body: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/web/", $path)),
        }
    };
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const SVG: &str = "image/svg+xml";

/// Every file of `web/` (a test checks that none is missing).
const FILES: &[WebFile] = &[
    web_file!("account.html", HTML),
    web_file!("admin.html", HTML),
    web_file!("sign-in.html", HTML),
    web_file!("reset-password.html", HTML),
    web_file!("verify-email.html", HTML),
    web_file!("assets/app.css", CSS),
    web_file!("assets/favicon.svg", SVG),
    web_file!("assets/api.js", JS),
    web_file!("assets/ui.js", JS),
    web_file!("assets/page.js", JS),
    web_file!("assets/events.js", JS),
    web_file!("assets/sign-in.js", JS),
    web_file!("assets/reset-password.js", JS),
    web_file!("assets/verify-email.js", JS),
    web_file!("assets/account.js", JS),
    web_file!("assets/admin.js", JS),
];

/// The pages and the files they are; `web/assets/*` is served as it is under `/assets/`.
pub const PAGES: &[(&str, &str)] = &[
    ("/account", "account.html"),
    ("/admin", "admin.html"),
    ("/sign-in", "sign-in.html"),
    ("/reset-password", "reset-password.html"),
    ("/verify-email", "verify-email.html"),
];

/// Each file's strong ETag: a hash of its bytes, fixed for the life of the binary.
static ETAGS: LazyLock<Vec<String>> = LazyLock::new(|| {
    FILES
        .iter()
        .map(|file| format!("\"{}\"", &hex::encode(Sha256::digest(file.body))[..32]))
        .collect()
});

pub fn configure(cfg: &mut web::ServiceConfig) {
    for (path, file) in PAGES {
        cfg.service(only(
            &["GET", "HEAD"],
            path,
            read().to(move |req: HttpRequest| async move { serve(&req, file) }),
        ));
    }
    cfg.service(only(
        &["GET", "HEAD"],
        "/assets/{name}",
        read().to(|req: HttpRequest, name: web::Path<String>| async move {
            serve(&req, &format!("assets/{name}"))
        }),
    ));
}

fn read() -> Route {
    web::route().guard(guard::Any(guard::Get()).or(guard::Head()))
}

/// A resource at `path` that answers `route`, and any other method with 405 and `Allow`.
pub(super) fn only(allow: &'static [&'static str], path: &str, route: Route) -> Resource {
    web::resource(path)
        .route(route)
        .default_service(web::to(move |req: HttpRequest| async move {
            method_not_allowed(req.method(), allow)
        }))
}

/// 405 as a problem document, with the methods that would do in `Allow`.
pub(super) fn method_not_allowed(method: &Method, allowed: &[&str]) -> HttpResponse {
    let allowed = allowed.join(", ");
    let mut response = Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed here; use {allowed}"),
    )
    .response();
    if let Ok(value) = HeaderValue::from_str(&allowed) {
        response.headers_mut().insert(header::ALLOW, value);
    }
    response
}

/// The file at `path` of `web/`, with its security headers; 304 when the client's copy is
/// current, 404 (as a problem document) when there is no such file.
fn serve(req: &HttpRequest, path: &str) -> HttpResponse {
    let Some(index) = FILES.iter().position(|file| file.path == path) else {
        return super::no_route(req);
    };
    let file = &FILES[index];
    let etag = &ETAGS[index];
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|tags| {
            tags.split(',')
                .any(|tag| tag.trim() == etag || tag.trim() == "*")
        });
    let mut response = if fresh {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    response
        .insert_header((header::ETAG, etag.as_str()))
        // Kept, but checked with the ETag on every use: a new binary's files show at once.
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
        // The mailed links carry their token in the query string: never pass it on.
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header(("Cross-Origin-Opener-Policy", "same-origin"));
    if fresh {
        return response.finish();
    }
    response.content_type(file.content_type).body(file.body)
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeSet, path::Path};

    use super::*;

    fn files_under(dir: &Path, prefix: &str, found: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
            if entry.file_type().unwrap().is_dir() {
                files_under(&entry.path(), &format!("{name}/"), found);
            } else {
                found.insert(name);
            }
        }
    }

    #[test]
    fn every_file_of_web_is_served_once_with_its_type() {
        let mut on_disk = BTreeSet::new();
        files_under(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("web"),
            "",
            &mut on_disk,
        );
        let served: BTreeSet<String> = FILES.iter().map(|f| f.path.to_owned()).collect();
        assert_eq!(served.len(), FILES.len(), "a file is listed twice");
        assert_eq!(served, on_disk);
        for file in FILES {
            let expected = match file.path.rsplit('.').next() {
                Some("html") => HTML,
                Some("js") => JS,
                Some("css") => CSS,
                Some("svg") => SVG,
                other => panic!("no type known for {other:?}"),
            };
            assert_eq!(file.content_type, expected, "{}", file.path);
        }
        for (_, page) in PAGES {
            assert!(served.contains(*page), "{page}");
        }
    }
}
