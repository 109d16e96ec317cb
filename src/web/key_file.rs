//! A key file uploaded from the admin panel's keys page: a
//! `multipart/form-data` post with the CSRF field and one text file, sent
//! by the plain form without JavaScript, or by `app.js` through XHR (the
//! same body) to show upload progress. The file goes through the same
//! all-or-nothing import as the API's (`shop::key_parse::check`, then
//! `ops::upload::import`).

use super::admin::signed_in;
use super::{csrf, layout, see_other, Form, Web};
use crate::domain::ids::ProductId;
use crate::error::Error;
use crate::http::State;
use actix_multipart::Multipart;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;

/// Room beside the file for the multipart framing and the CSRF field.
const FRAMING: usize = 64 * 1024;

/// `POST /admin/products/{id}/keys/file`.
pub async fn upload(
    req: HttpRequest,
    state: State,
    web: Web,
    payload: web::Payload,
) -> HttpResponse {
    if !signed_in(&req, &web) {
        return see_other("/admin/login");
    }
    let id = match ProductId::parse(req.match_info().get("id").unwrap_or("")) {
        Ok(id) => id,
        Err(_) => return layout::not_found(&req, &state, &web),
    };
    let limit = state.config.limits.import_body_mb * 1024 * 1024;
    let (token, file) = match read_parts(&req, payload, limit).await {
        Ok(parts) => parts,
        Err(e) => return layout::error(&req, &state, &web, &e),
    };
    if !csrf::valid(&req, &Form(vec![(csrf::FIELD.to_string(), token)])) {
        return layout::refused(&req, &state, &web);
    }
    match import_text(&state, id.clone(), file).await {
        Ok(()) => see_other(&format!("/admin/products/{}/keys", id.as_str())),
        Err(e) => layout::error(&req, &state, &web, &e),
    }
}

/// The posted CSRF field and file. The whole body is read first under the
/// API's body limit and deadline (`read_body`), then taken apart.
async fn read_parts(
    req: &HttpRequest,
    payload: web::Payload,
    limit: usize,
) -> Result<(String, Vec<u8>), Error> {
    let body = crate::http::read_body(req, payload, limit + FRAMING).await?;
    let once = futures_util::stream::once(async move { Ok(body) });
    let mut parts = Multipart::new(req.headers(), once);
    let (mut token, mut file) = (String::new(), None);
    while let Some(part) = parts.next().await {
        let mut part = part.map_err(bad_form)?;
        let name = part.name().unwrap_or_default().to_string();
        let mut bytes = Vec::new();
        while let Some(chunk) = part.next().await {
            bytes.extend_from_slice(&chunk.map_err(bad_form)?);
        }
        match name.as_str() {
            csrf::FIELD => token = String::from_utf8(bytes).unwrap_or_default(),
            "file" => file = Some(bytes),
            _ => {}
        }
    }
    let file = file.ok_or_else(|| Error::invalid("file", "no key file was posted"))?;
    if file.len() > limit {
        return Err(Error::PayloadTooLarge(format!(
            "the key file is larger than {limit} bytes"
        )));
    }
    Ok((token, file))
}

fn bad_form(e: actix_multipart::MultipartError) -> Error {
    Error::invalid("body", format!("not a multipart/form-data upload: {e}"))
}

/// Imports a text key list, one key per line, all or nothing: the API's
/// own check and upload, off the async workers.
pub async fn import_text(state: &State, pid: ProductId, text: Vec<u8>) -> Result<(), Error> {
    let (store, crypto) = (state.store.clone(), state.crypto.clone());
    web::block(move || {
        use crate::shop::key_parse::{check, Format};
        let checked = check(Format::Text, &text)?;
        crate::ops::upload::import(&store, &crypto, pid.as_str(), checked.total(), |each| {
            checked.for_each_key(&text, each)
        })
    })
    .await
    .map_err(|_| Error::unavailable("server busy"))??;
    Ok(())
}
