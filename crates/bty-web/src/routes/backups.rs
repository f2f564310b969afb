//! `/api/backups`: bty-web's archives (admin only, like every `/api/`
//! route; the gate also refuses a foreign `Origin` on the POST).

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::backups::{Archive, Error, Overview};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// `GET /api/backups`: the schedule, the archives (newest first) and the
/// last failure.
pub async fn list(State(st): State<AppState>) -> ApiResult<axum::Json<Overview>> {
    let b = st.backups.clone();
    // Reading a directory blocks.
    let v = tokio::task::spawn_blocking(move || b.overview())
        .await
        .map_err(ApiError::internal)?;
    Ok(axum::Json(v))
}

/// `POST /api/backups`: back up now; 201 with the new archive. 409 on
/// PostgreSQL, 500 with the reason when the archive could not be written
/// (the admin is the one who fixes it).
pub async fn create(State(st): State<AppState>) -> ApiResult<Response> {
    match st.backups.run(&st.domain, &st.metrics).await {
        Ok(a) => Ok((StatusCode::CREATED, axum::Json::<Archive>(a)).into_response()),
        Err(e @ Error::Off(_)) => Err(ApiError::conflict(e.to_string())),
        Err(e) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("backup failed: {e}"),
        )),
    }
}

/// `GET /api/backups/{name}`: the archive, streamed as an attachment.
/// Only a name the listing shows is served; anything else is 404.
pub async fn download(State(st): State<AppState>, Path(name): Path<String>) -> ApiResult<Response> {
    let not_found =
        || ApiError::not_found(format!("no backup {name:?}; GET /api/backups lists them"));
    let b = st.backups.clone();
    let n = name.clone();
    let path = tokio::task::spawn_blocking(move || b.find(&n))
        .await
        .ok()
        .flatten()
        .ok_or_else(not_found)?;
    // Pruned between the listing and now: still a 404.
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|_| not_found())?;
    let len = file.metadata().await.map_err(ApiError::internal)?.len();
    Response::builder()
        .header(header::CONTENT_TYPE, "application/zstd")
        .header(header::CONTENT_LENGTH, len)
        // The name is `bty-<stamp>.tar.zst`: nothing to quote or escape.
        .header(
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{name}\""),
        )
        .header(header::CACHE_CONTROL, "no-store")
        .body(Body::from_stream(
            tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024),
        ))
        .map_err(ApiError::internal)
}
