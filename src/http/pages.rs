//! The browser pages: the live scoreboard (`/`), the scorekeeper console
//! (`/console`) and the browser client (`/scorehub.js`).
//!
//! Everything is embedded in the binary at compile time from `web/`, so the
//! hub serves its pages with no other server and no files on disk. The
//! client bundle `web/dist/scorehub.js` is built by `web/build.sh` and
//! committed, so building the crate never needs npm.
//!
//! The pages hold no inline script or style, which lets every response carry
//! a strict Content-Security-Policy.

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::app::AppState;

/// The policy on every page and asset: only this origin's scripts, styles and
/// connections (WebSocket included), no framing, no inline code.
pub(crate) const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; style-src 'self'; script-src 'self'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

/// One embedded file: its path, media type and bytes.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
    /// Whether other origins may load it (the client module, for third-party pages).
    cross_origin: bool,
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";

/// Every page and asset, by path.
const ASSETS: &[Asset] = &[
    Asset {
        path: "/",
        content_type: HTML,
        body: include_bytes!("../../web/index.html"),
        cross_origin: false,
    },
    Asset {
        path: "/console",
        content_type: HTML,
        body: include_bytes!("../../web/console.html"),
        cross_origin: false,
    },
    Asset {
        path: "/scorehub.js",
        content_type: "application/javascript",
        body: include_bytes!("../../web/dist/scorehub.js"),
        cross_origin: true,
    },
    Asset {
        path: "/assets/app.js",
        content_type: JS,
        body: include_bytes!("../../web/app.js"),
        cross_origin: false,
    },
    Asset {
        path: "/assets/console.js",
        content_type: JS,
        body: include_bytes!("../../web/console.js"),
        cross_origin: false,
    },
    Asset {
        path: "/assets/style.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../web/style.css"),
        cross_origin: false,
    },
    Asset {
        path: "/favicon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../../web/favicon.svg"),
        cross_origin: false,
    },
];

/// The routes of the pages and their assets, to merge into the hub's router.
pub(crate) fn routes() -> Router<AppState> {
    ASSETS.iter().fold(Router::new(), |router, asset| {
        router.route(asset.path, get(move || async move { serve(asset) }))
    })
}

/// The response for one asset, with the security and caching headers.
fn serve(asset: &'static Asset) -> Response {
    let mut res = (StatusCode::OK, asset.body).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // Small files embedded in the binary: always revalidate, so an upgraded
    // hub never runs against a stale cached client.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if asset.cross_origin {
        h.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asset(path: &str) -> &'static Asset {
        ASSETS
            .iter()
            .find(|a| a.path == path)
            .unwrap_or_else(|| panic!("no asset at {path}"))
    }

    fn text(a: &Asset) -> &'static str {
        std::str::from_utf8(a.body).expect("web assets are UTF-8")
    }

    #[test]
    fn every_response_carries_the_security_headers() {
        for a in ASSETS {
            let res = serve(a);
            assert_eq!(res.status(), StatusCode::OK, "{}", a.path);
            let h = res.headers();
            assert_eq!(h[header::CONTENT_TYPE], a.content_type, "{}", a.path);
            assert_eq!(
                h[header::CONTENT_SECURITY_POLICY],
                CONTENT_SECURITY_POLICY,
                "{}",
                a.path
            );
            assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
            assert_eq!(h[header::REFERRER_POLICY], "no-referrer");
            assert_eq!(h[header::CACHE_CONTROL], "no-cache");
        }
    }

    #[test]
    fn the_client_module_is_javascript_any_origin_may_import() {
        let res = serve(asset("/scorehub.js"));
        assert_eq!(
            res.headers()[header::CONTENT_TYPE],
            "application/javascript"
        );
        assert_eq!(res.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        let js = text(asset("/scorehub.js"));
        assert!(js.contains("export"), "the bundle is an ES module");
        assert!(
            js.is_ascii(),
            "the bundle is ASCII, so its media type needs no charset"
        );
    }

    /// The CSP forbids inline code: the pages must not depend on any.
    #[test]
    fn pages_have_no_inline_script_or_style() {
        for path in ["/", "/console"] {
            let html = text(asset(path)).to_ascii_lowercase();
            for (i, _) in html.match_indices("<script") {
                let tag = &html[i..i + html[i..].find('>').expect("closed tag")];
                assert!(
                    tag.contains(" src="),
                    "{path}: inline <script> is blocked by the CSP"
                );
            }
            assert!(!html.contains("<style"), "{path}: inline <style>");
            assert!(!html.contains(" style="), "{path}: style attribute");
            assert!(!html.contains(" onclick="), "{path}: inline handler");
            assert!(!html.contains("javascript:"), "{path}: javascript: URL");
        }
    }

    #[test]
    fn pages_only_reference_embedded_assets() {
        for path in ["/", "/console"] {
            let html = text(asset(path));
            for attr in ["src=\"", "href=\""] {
                for (i, _) in html.match_indices(attr) {
                    let start = i + attr.len();
                    let url = &html[start..start + html[start..].find('"').expect("quoted")];
                    if url.starts_with("/assets/") || url.starts_with("/favicon") {
                        assert!(
                            ASSETS.iter().any(|a| a.path == url),
                            "{path} references {url}, which is not embedded"
                        );
                    }
                }
            }
        }
    }
}
