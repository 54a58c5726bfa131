//! The web pages of nonstop, served by the binaries themselves: plain HTML, CSS and JavaScript
//! modules with no build step, embedded at compile time, so a node needs no separate web server
//! and its pages always match its API.
//!
//! - [`hospital`]: the hospital's pages, served by the node at `/`: sign-in, the registration
//!   desk (挂号), the cashier (收费), the doctor's workstation (医生工作站), the waiting-room
//!   screen (叫号屏) and the self-service kiosk (自助机). Chinese by default, English switchable.
//! - [`console`]: the update console, served by the update server at `/`: the fleet, releases,
//!   rollouts as they happen, the audit chain.
//!
//! Every answer carries a Content-Security-Policy that lets a page talk to its own origin only,
//! so no page can send patient data anywhere else, and an ETag, so a browser revalidates cheaply
//! and sees a new version as soon as the program serving it changes.
//!
//! Set `NONSTOP_PAGES_DIR` to the `assets` folder to serve the files from disk instead
//! (for working on the pages without rebuilding); without it, the embedded copies are served.

#![deny(missing_docs)]

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

/// One embedded file: its URL path, its path under `assets/`, its media type and its bytes.
struct Asset {
    url: &'static str,
    file: &'static str,
    media_type: &'static str,
    bytes: &'static [u8],
}

macro_rules! asset {
    ($url:literal, $file:literal, $media_type:literal) => {
        Asset {
            url: $url,
            file: $file,
            media_type: $media_type,
            bytes: include_bytes!(concat!("../assets/", $file)),
        }
    };
}

/// The hospital's pages, with what they share with the console (`assets/common`). Listed by
/// hand (a handful of files): a test checks that every file of their folders is listed.
const HOSPITAL: &[Asset] = &[
    asset!("/base.css", "common/base.css", "text/css; charset=utf-8"),
    asset!("/dom.js", "common/dom.js", "text/javascript; charset=utf-8"),
    asset!("/", "hospital/index.html", "text/html; charset=utf-8"),
    asset!(
        "/app.js",
        "hospital/app.js",
        "text/javascript; charset=utf-8"
    ),
    asset!(
        "/i18n.js",
        "hospital/i18n.js",
        "text/javascript; charset=utf-8"
    ),
    asset!("/app.css", "hospital/app.css", "text/css; charset=utf-8"),
    asset!(
        "/screen.html",
        "hospital/screen.html",
        "text/html; charset=utf-8"
    ),
    asset!(
        "/screen.js",
        "hospital/screen.js",
        "text/javascript; charset=utf-8"
    ),
];

/// The update server's console. Listed by hand, like [`HOSPITAL`].
const CONSOLE: &[Asset] = &[
    asset!("/base.css", "common/base.css", "text/css; charset=utf-8"),
    asset!("/dom.js", "common/dom.js", "text/javascript; charset=utf-8"),
    asset!("/", "console/index.html", "text/html; charset=utf-8"),
    asset!(
        "/console.js",
        "console/console.js",
        "text/javascript; charset=utf-8"
    ),
    asset!(
        "/i18n.js",
        "console/i18n.js",
        "text/javascript; charset=utf-8"
    ),
    asset!(
        "/console.css",
        "console/console.css",
        "text/css; charset=utf-8"
    ),
];

/// The policy every page is served with: scripts, styles, images and connections from this
/// origin only; no framing; no plugins.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
                   frame-ancestors 'none'";

/// The hospital's pages at `/`, for the node's router.
pub fn hospital<S: Clone + Send + Sync + 'static>() -> Router<S> {
    pages(HOSPITAL)
}

/// The update console at `/`, for the update server's router.
pub fn console<S: Clone + Send + Sync + 'static>() -> Router<S> {
    pages(CONSOLE)
}

fn pages<S: Clone + Send + Sync + 'static>(assets: &'static [Asset]) -> Router<S> {
    let mut router = Router::new();
    for asset in assets {
        router = router.route(
            asset.url,
            get(move |headers: HeaderMap| async move { serve(asset, &headers) }),
        );
    }
    router
}

fn serve(asset: &Asset, request: &HeaderMap) -> Response {
    let bytes: std::borrow::Cow<'static, [u8]> = match std::env::var_os("NONSTOP_PAGES_DIR") {
        Some(dir) => match std::fs::read(std::path::Path::new(&dir).join(asset.file)) {
            Ok(bytes) => bytes.into(),
            Err(_) => asset.bytes.into(),
        },
        None => asset.bytes.into(),
    };
    let etag = format!("\"{}\"", &hex::encode(Sha256::digest(&bytes))[..16]);
    let mut headers = HeaderMap::new();
    let fixed = [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-cache"),
        (header::CONTENT_TYPE, asset.media_type),
    ];
    for (name, value) in fixed {
        headers.insert(name, HeaderValue::from_static(value));
    }
    if let Ok(value) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, value);
    }
    let unchanged = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == etag);
    if unchanged {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    (headers, bytes.into_owned()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_of_the_pages_is_served() {
        for (folder, assets) in [
            ("hospital", HOSPITAL),
            ("console", CONSOLE),
            ("common", HOSPITAL),
            ("common", CONSOLE),
        ] {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("assets")
                .join(folder);
            let mut files: Vec<String> = std::fs::read_dir(dir)
                .unwrap()
                .map(|f| format!("{folder}/{}", f.unwrap().file_name().to_string_lossy()))
                .collect();
            files.sort();
            let mut listed: Vec<String> = assets
                .iter()
                .map(|a| a.file.to_owned())
                .filter(|f| f.starts_with(&format!("{folder}/")))
                .collect();
            listed.sort();
            assert_eq!(files, listed);
        }
    }
}
