//! The web pages: plain HTML, CSS and ES modules from `web/`, built into the binary so that
//! `cargo run` (or the release binary alone) serves them with nothing to build or install.
//! The pages talk to the JSON API like any other client; this module only hands out files.

use std::{collections::HashMap, sync::LazyLock};

use actix_web::{HttpRequest, HttpResponse, Resource, Route, http::header, web};
use sha2::{Digest, Sha256};

use super::conditional::{self, IfNoneMatch};
use crate::domain::Version;

/// Allows nothing from another origin, no inline script or style, no plugins, no framing.
/// `img-src data:` is for the QR code, which the account page shows as a `data:` URL.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; \
     frame-ancestors 'none'; base-uri 'none'";

/// A file of `web/`, built into the binary.
struct WebFile {
    path: &'static str,
    body: &'static str,
}

macro_rules! web_file {
    ($path:literal) => {
        WebFile {
            path: $path,
            body: include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/web/", $path)),
        }
    };
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const SVG: &str = "image/svg+xml";

/// What every page shares: the document's head, the skip link and the header.
const LAYOUT: WebFile = web_file!("layout.html");

/// A page: its address, the `<main>` it puts into the layout, its title. Its script is the
/// module of the same name, `assets/NAME.js`.
struct Page {
    path: &'static str,
    main: WebFile,
    title: &'static str,
}

const PAGES: &[Page] = &[
    Page {
        path: "/account",
        main: web_file!("account.html"),
        title: "Your account",
    },
    Page {
        path: "/admin",
        main: web_file!("admin.html"),
        title: "Admin console",
    },
    Page {
        path: "/sign-in",
        main: web_file!("sign-in.html"),
        title: "Sign in",
    },
    Page {
        path: "/reset-password",
        main: web_file!("reset-password.html"),
        title: "Set a new password",
    },
    Page {
        path: "/verify-email",
        main: web_file!("verify-email.html"),
        title: "Confirm your email address",
    },
];

/// Served as they are, under `/assets/`.
const ASSETS: &[WebFile] = &[
    web_file!("assets/app.css"),
    web_file!("assets/favicon.svg"),
    web_file!("assets/api.js"),
    web_file!("assets/ui.js"),
    web_file!("assets/page.js"),
    web_file!("assets/events.js"),
    web_file!("assets/sign-in.js"),
    web_file!("assets/reset-password.js"),
    web_file!("assets/verify-email.js"),
    web_file!("assets/account.js"),
    web_file!("assets/admin.js"),
];

impl Page {
    /// The whole document: the layout around this page's `<main>`. The page's own text
    /// goes in last, so that nothing in it is taken for a placeholder.
    fn render(&self) -> String {
        let script = format!("{}.js", self.path.trim_start_matches('/'));
        LAYOUT
            .body
            .replacen("{{title}}", self.title, 1)
            .replacen("{{script}}", &script, 1)
            .replacen("{{main}}", self.main.body.trim_end(), 1)
    }
}

/// What a URL path serves.
struct Served {
    content_type: &'static str,
    /// Shared, not copied, by every response.
    body: web::Bytes,
    /// A hash of the body, fixed for the life of the binary.
    version: Version,
}

impl Served {
    fn new(content_type: &'static str, body: impl Into<web::Bytes>) -> Self {
        let body = body.into();
        let version = Version::from_opaque(&hex::encode(Sha256::digest(&body))[..32]);
        Self {
            content_type,
            body,
            version,
        }
    }
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next() {
        Some("js") => JS,
        Some("css") => CSS,
        Some("svg") => SVG,
        _ => HTML,
    }
}

/// Every page, rendered once, and every asset, by URL path.
static SERVED: LazyLock<HashMap<String, Served>> = LazyLock::new(|| {
    let pages = PAGES
        .iter()
        .map(|page| (page.path.to_owned(), Served::new(HTML, page.render())));
    let assets = ASSETS.iter().map(|asset| {
        let served = Served::new(content_type(asset.path), asset.body);
        (format!("/{}", asset.path), served)
    });
    pages.chain(assets).collect()
});

pub fn configure(cfg: &mut web::ServiceConfig) {
    let paths = PAGES.iter().map(|page| page.path).chain(["/assets/{name}"]);
    for path in paths {
        cfg.service(only(
            &["GET"],
            path,
            web::get().to(|req: HttpRequest, held: IfNoneMatch| async move { serve(&req, held) }),
        ));
    }
    // Whoever opens the service's address in a browser lands on their account (or its
    // sign-in); temporary, so that a front page can take its place later.
    cfg.service(only(
        &["GET"],
        "/",
        web::get().to(|| async {
            HttpResponse::Found()
                .insert_header((header::LOCATION, "/account"))
                .finish()
        }),
    ));
}

/// A resource at `path` that answers `route`, and any other method with 405 and `Allow`.
pub(super) fn only(allow: &'static [&'static str], path: &str, route: Route) -> Resource {
    web::resource(path)
        .route(route)
        .default_service(web::to(move |req: HttpRequest| async move {
            super::method_not_allowed(req.method(), allow)
        }))
}

/// What the request's path serves, with its security headers; 304 when the client's copy
/// is current, 404 (as a problem document) when there is nothing.
fn serve(req: &HttpRequest, held: IfNoneMatch) -> HttpResponse {
    let Some(served) = SERVED.get(req.path()) else {
        return super::no_route(req);
    };
    let fresh = held.0.is_some_and(|held| held.holds_for(&served.version));
    let mut response = if fresh {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    response
        .insert_header((header::ETAG, conditional::etag(&served.version)))
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
    response
        .content_type(served.content_type)
        .body(served.body.clone())
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
    fn every_file_of_web_is_used_once() {
        let mut on_disk = BTreeSet::new();
        files_under(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("web"),
            "",
            &mut on_disk,
        );
        let used: Vec<&str> = [LAYOUT.path]
            .into_iter()
            .chain(PAGES.iter().map(|page| page.main.path))
            .chain(ASSETS.iter().map(|asset| asset.path))
            .collect();
        let unique: BTreeSet<String> = used.iter().map(|path| (*path).to_owned()).collect();
        assert_eq!(unique.len(), used.len(), "a file is listed twice");
        assert_eq!(unique, on_disk);
    }

    #[test]
    fn every_page_is_a_whole_document_with_its_own_script() {
        for page in PAGES {
            let html = page.render();
            assert!(html.starts_with("<!doctype html>"), "{}", page.path);
            assert!(!html.contains("{{"), "{}", page.path);
            assert!(html.contains(&format!("<title>{} · user-service</title>", page.title)));
            let script = format!("/assets{}.js", page.path);
            assert!(html.contains(&format!("src=\"{script}\"")), "{}", page.path);
            assert!(SERVED.contains_key(&script), "{script}");
            assert_eq!(html.matches("<main ").count(), 1, "{}", page.path);
        }
    }

    #[test]
    fn assets_have_their_types() {
        assert_eq!(SERVED["/assets/app.css"].content_type, CSS);
        assert_eq!(SERVED["/assets/api.js"].content_type, JS);
        assert_eq!(SERVED["/assets/favicon.svg"].content_type, SVG);
        assert_eq!(SERVED["/account"].content_type, HTML);
    }
}
