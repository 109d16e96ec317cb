//! Operations endpoints: on-line backup and Prometheus metrics.

use super::auth::Admin;
use super::{HttpResult, State};
use crate::error::Error;
use actix_web::{web, HttpResponse};

/// `POST /api/v1/admin/backup`: a consistent copy of the store under
/// `[storage] backup_dir`, taken while serving.
pub async fn backup(_: Admin, state: State) -> HttpResult {
    let (path, bytes, last_batch) = write_backup(&state).await?;
    Ok(HttpResponse::Ok().json(crate::views::BackupView {
        path,
        bytes,
        last_batch,
    }))
}

/// Writes a backup while serving: (its path, bytes, last batch). The API
/// and the admin panel's button both back up through this.
pub async fn write_backup(state: &State) -> Result<(String, u64, u64), Error> {
    let st = state.clone();
    let result = web::block(move || {
        let stamp = crate::views::rfc3339(crate::store::now_ms()).replace(':', "");
        let storage = &st.config.storage;
        let dir = storage
            .backup_dir
            .clone()
            .unwrap_or_else(|| storage.data_dir.join("backups"));
        let out = dir.join(format!("faka-backup-{stamp}-{:08x}", rand::random::<u32>()));
        // Hold the file lock so no snapshot rotation prunes what we copy.
        let _files = st.store.files_lock();
        crate::ops::backup::backup(st.store.data_dir(), &out)
    })
    .await
    .map_err(|_| Error::unavailable("server busy"))?
    .map_err(|e| {
        tracing::error!(error = %e, "backup failed");
        Error::unavailable(format!("backup failed: {e}"))
    })?;
    let path = std::fs::canonicalize(&result.path).unwrap_or(result.path);
    tracing::info!(path = %path.display(), bytes = result.bytes, "backup written");
    Ok((path.display().to_string(), result.bytes, result.last_batch))
}

/// `GET /metrics` (admin): Prometheus text format.
pub async fn metrics(_: Admin, state: State) -> HttpResult {
    let st = state.clone();
    let text = web::block(move || st.metrics.render(&st.store))
        .await
        .map_err(|_| Error::unavailable("server busy"))?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(text))
}
