//! The console's static files, embedded in the binary (nothing is fetched from anywhere at run
//! time) and served under `<base>/assets/<stem>.<hash>.<ext>`: the hash is the first 12 hex
//! digits of the file's SHA-256, so a new build's files get new names and browsers may keep
//! each one for a year.

use std::sync::OnceLock;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::app::serve::extract::PathArgs;

/// One embedded file.
#[derive(Debug)]
pub struct Asset {
    /// Its name without the hash (`console.css`).
    pub stem: &'static str,
    /// Its content type.
    pub content_type: &'static str,
    /// Its bytes.
    pub bytes: &'static [u8],
}

/// The stylesheet.
pub const CSS: usize = 0;
/// The script.
pub const JS: usize = 1;
/// The icon.
pub const ICON: usize = 2;

/// Every embedded file, indexed by [`CSS`], [`JS`], [`ICON`].
pub static ASSETS: [Asset; 3] = [
    Asset {
        stem: "console.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("assets/console.css"),
    },
    Asset {
        stem: "console.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("assets/console.js"),
    },
    Asset {
        stem: "icon.svg",
        content_type: "image/svg+xml",
        bytes: include_bytes!("assets/icon.svg"),
    },
];

/// Each file's served name, computed once.
fn names() -> &'static [String; 3] {
    static NAMES: OnceLock<[String; 3]> = OnceLock::new();
    NAMES.get_or_init(|| {
        ASSETS.each_ref().map(|a| {
            let digest = Sha256::digest(a.bytes);
            let hash: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
            let (name, ext) = a.stem.rsplit_once('.').unwrap_or((a.stem, ""));
            format!("{name}.{hash}.{ext}")
        })
    })
}

/// The URL of asset `index` under `base`.
pub fn url(base: &str, index: usize) -> String {
    format!("{base}/assets/{}", names()[index])
}

/// `GET <base>/assets/{name}`: the file, cached for a year (its name changes with it); 404 for
/// any other name.
pub async fn serve(PathArgs(name): PathArgs<String>) -> Response {
    let Some(i) = names().iter().position(|n| *n == name) else {
        let mut resp = (StatusCode::NOT_FOUND, "no such asset").into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        return resp;
    };
    let a = &ASSETS[i];
    let mut resp = a.bytes.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(a.content_type),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_content_hash() {
        let css = url("/r", CSS);
        assert!(css.starts_with("/r/assets/console."), "{css}");
        assert!(css.ends_with(".css"));
        assert_eq!(css.len(), "/r/assets/console..css".len() + 12);
        assert_ne!(names()[CSS], names()[JS]);
    }
}
