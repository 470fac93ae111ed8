//! Sightline's web UI. The front end under `assets/` (JavaScript modules, Preact with htm, uPlot,
//! vendored — no build step) is embedded into the binary by `build.rs`; [`router`] serves it.
//!
//! Pages are real paths (`/map`, `/top`, `/service/{name}`, `/search`, `/trace/{id}`) so that a
//! deep link survives a reload: each answers with `index.html`, and the front end reads the view
//! and its filters from the URL.

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// One embedded file.
pub struct Asset {
    /// Path under `assets/`, with `/` separators.
    pub path: &'static str,
    pub content_type: &'static str,
    /// A quoted content hash.
    pub etag: &'static str,
    pub body: &'static [u8],
    /// The gzip-compressed body, where compression pays.
    pub gzip: Option<&'static [u8]>,
}

static ASSETS: &[Asset] = include!(concat!(env!("OUT_DIR"), "/assets.rs"));

/// The page routes of the front end; each serves `index.html`.
pub const PAGES: &[&str] = &[
    "/",
    "/map",
    "/top",
    "/service/{name}",
    "/search",
    "/trace/{id}",
    "/explore",
    "/apps",
    "/apps/{app}",
];

/// Scripts only from our own origin; styles may be inline because uPlot sizes its elements with
/// style attributes.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; \
     frame-ancestors 'none'; base-uri 'none'";

/// The embedded file at `path` (relative to `assets/`).
pub fn asset(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.path == path)
}

/// Routes for the pages and `/assets/{*path}`, to merge into the HTTP server's router. Any other
/// path is a 404: under `/api/` the API's JSON error, for a browser the UI's own "no such page"
/// (so the navigation still works), for any other client a plain message.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let mut router = Router::new().route("/assets/{*path}", get(serve_asset));
    for page in PAGES {
        router = router.route(page, get(serve_index));
    }
    router.fallback(not_found)
}

async fn not_found(uri: axum::http::Uri, headers: HeaderMap) -> Response {
    let message = format!("no such path: {}", uri.path());
    if uri.path().starts_with("/api/") {
        // The API's own error shape (docs/api.md).
        return (
            StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({ "error": message })),
        )
            .into_response();
    }
    let wants_html = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"));
    match asset("index.html").filter(|_| wants_html) {
        Some(index) => {
            let mut response = respond(index, &HeaderMap::new());
            *response.status_mut() = StatusCode::NOT_FOUND;
            response
        }
        None => (
            StatusCode::NOT_FOUND,
            format!("no such path: {}", uri.path()),
        )
            .into_response(),
    }
}

async fn serve_index(headers: HeaderMap) -> Response {
    match asset("index.html") {
        Some(index) => respond(index, &headers),
        None => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "index.html is not embedded",
        )
            .into_response(),
    }
}

async fn serve_asset(
    axum::extract::Path(path): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Response {
    match asset(&path) {
        Some(found) => respond(found, &headers),
        None => (StatusCode::NOT_FOUND, format!("no asset {path}")).into_response(),
    }
}

/// Answers with the asset, or 304 when the browser's copy is current. Assets are revalidated on
/// every load (`no-cache`) so an upgraded binary never serves a stale module graph; the ETag
/// makes that a few bytes.
fn respond(asset: &'static Asset, request: &HeaderMap) -> Response {
    let etag = HeaderValue::from_static(asset.etag);
    let common = [
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (header::ETAG, etag),
        (header::VARY, HeaderValue::from_static("accept-encoding")),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
    ];
    let unchanged = request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| tag.trim() == asset.etag || tag.trim() == "*");
    if unchanged {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    let content_type = (
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    match asset.gzip.filter(|_| accepts_gzip(request)) {
        Some(gzipped) => (
            common,
            [
                content_type,
                (header::CONTENT_ENCODING, HeaderValue::from_static("gzip")),
            ],
            Body::from(gzipped),
        )
            .into_response(),
        None => (common, [content_type], Body::from(asset.body)).into_response(),
    }
}

fn accepts_gzip(request: &HeaderMap) -> bool {
    request
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';');
            let name = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    == Some(0.0)
            });
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_and_vendored_libraries_are_embedded() {
        for path in [
            "index.html",
            "app.js",
            "vendor/preact-htm.js",
            "vendor/uplot.js",
        ] {
            let found = asset(path).unwrap_or_else(|| panic!("{path} embedded"));
            assert!(!found.body.is_empty());
        }
        assert_eq!(
            asset("app.js").map(|a| a.content_type),
            Some("text/javascript; charset=utf-8")
        );
    }

    #[test]
    fn every_module_import_resolves_to_an_embedded_file() {
        // A module graph with a missing file is a blank page: check every relative import.
        for module in ASSETS
            .iter()
            .filter(|a| a.path.ends_with(".js") && !a.path.starts_with("vendor/"))
        {
            let text = std::str::from_utf8(module.body).expect("modules are UTF-8");
            for line in text.lines().filter(|l| l.starts_with("import ")) {
                let Some(spec) = line.split(['\'', '"']).nth(1) else {
                    continue;
                };
                let base = module.path.rsplit_once('/').map_or("", |(dir, _)| dir);
                let resolved = resolve(base, spec);
                assert!(
                    asset(&resolved).is_some(),
                    "{}: import {spec} → {resolved} is not embedded",
                    module.path
                );
            }
        }
    }

    #[test]
    fn index_preloads_every_module() {
        // Without a preload, a module is fetched only once its importer has arrived: one more
        // round trip before the first paint.
        let index = std::str::from_utf8(asset("index.html").expect("index").body).expect("UTF-8");
        for module in ASSETS.iter().filter(|a| a.path.ends_with(".js")) {
            let preload = format!(
                r#"<link rel="modulepreload" href="/assets/{}">"#,
                module.path
            );
            assert!(
                index.contains(&preload) || module.path == "app.js",
                "index.html does not preload {}",
                module.path
            );
        }
    }

    fn resolve(base: &str, spec: &str) -> String {
        let mut parts: Vec<&str> = if spec.starts_with("/assets/") {
            Vec::new()
        } else {
            base.split('/').filter(|p| !p.is_empty()).collect()
        };
        for part in spec.trim_start_matches("/assets/").split('/') {
            match part {
                "." | "" => {}
                ".." => {
                    parts.pop();
                }
                other => parts.push(other),
            }
        }
        parts.join("/")
    }

    #[test]
    fn gzip_negotiation_honours_q_zero() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("gzip, deflate, br"),
        );
        assert!(accepts_gzip(&headers));
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("gzip;q=0, br"),
        );
        assert!(!accepts_gzip(&headers));
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
        assert!(!accepts_gzip(&headers));
    }
}
