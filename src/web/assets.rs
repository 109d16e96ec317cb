//! The stylesheet and script, embedded in the binary and served under names
//! that carry a hash of their content, so browsers may keep them a year:
//! a new build with different bytes has new names.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse};
use std::sync::LazyLock;

struct Asset {
    name: String,
    body: &'static [u8],
    content_type: &'static str,
}

static ASSETS: LazyLock<[Asset; 2]> = LazyLock::new(|| {
    [
        asset(
            "app",
            "css",
            include_bytes!("assets/app.css"),
            "text/css; charset=utf-8",
        ),
        asset(
            "app",
            "js",
            include_bytes!("assets/app.js"),
            "text/javascript; charset=utf-8",
        ),
    ]
});

fn asset(stem: &str, ext: &str, body: &'static [u8], content_type: &'static str) -> Asset {
    let hash = hex::encode(&crate::crypto::sha256(body)[..6]);
    Asset {
        name: format!("{stem}.{hash}.{ext}"),
        body,
        content_type,
    }
}

/// The stylesheet's path.
pub fn css() -> String {
    format!("/assets/{}", ASSETS[0].name)
}

/// The script's path.
pub fn js() -> String {
    format!("/assets/{}", ASSETS[1].name)
}

pub async fn serve(req: HttpRequest) -> HttpResponse {
    let name = req.match_info().get("name").unwrap_or("");
    match ASSETS.iter().find(|a| a.name == name) {
        Some(a) => HttpResponse::Ok()
            .content_type(a.content_type)
            .insert_header((header::CACHE_CONTROL, "public, max-age=31536000, immutable"))
            .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
            .body(a.body),
        None => HttpResponse::NotFound()
            .content_type("text/plain; charset=utf-8")
            .body("not found"),
    }
}
