//! `GET /api/machines/export` and `POST /api/machines/import`: many
//! machines at once, as CSV or JSON ([`crate::domain::bulk`]).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::domain::bulk::{self, Action, Format, Report, RowReport};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// `GET /api/machines/export` query.
#[derive(Debug, Deserialize)]
pub struct ExportQuery {
    /// `csv` (the default) or `json`.
    #[serde(default)]
    pub format: Option<String>,
}

/// `GET /api/machines/export?format=csv|json`: every machine, ordered by
/// MAC, in the import's format.
pub async fn export(
    State(st): State<AppState>,
    q: Result<Query<ExportQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) = q?;
    let raw = q.format.as_deref().unwrap_or("csv");
    let format = Format::parse(raw)
        .ok_or_else(|| ApiError::bad_request(format!("format: {raw:?} is neither csv nor json")))?;
    let body = st.domain.export_machines(format).await?;
    let (ctype, ext) = match format {
        Format::Csv => ("text/csv; charset=utf-8", "csv"),
        Format::Json => ("application/json", "json"),
    };
    let disposition = format!("attachment; filename=\"machines.{ext}\"");
    Ok((
        [
            (header::CONTENT_TYPE, ctype.to_string()),
            (header::CONTENT_DISPOSITION, disposition),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
        body,
    )
        .into_response())
}

/// `POST /api/machines/import` query.
#[derive(Debug, Deserialize)]
pub struct ImportQuery {
    /// Check and plan only; write nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// The format a request body declares by its `Content-Type`.
fn body_format(headers: &HeaderMap) -> ApiResult<Format> {
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = ctype.split(';').next().unwrap_or("").trim();
    match essence.to_ascii_lowercase().as_str() {
        "text/csv" => Ok(Format::Csv),
        "application/json" => Ok(Format::Json),
        _ => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Type {ctype:?}: send the machines as text/csv or application/json"),
        )),
    }
}

/// `POST /api/machines/import[?dry_run=true]`: 200 with the report when
/// every row is valid (written unless `dry_run`), 422 with the same
/// report, nothing written, when a row is not.
pub async fn import(
    State(st): State<AppState>,
    q: Result<Query<ImportQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let Query(q) = q?;
    let format = body_format(&headers)?;
    let body = body.map_err(|r| match r.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the file is larger than {} MiB; split it into several imports",
                crate::IMPORT_LIMIT >> 20
            ),
        ),
        s => ApiError::new(s, r.body_text()),
    })?;
    let report = import_body(&st, format, &body, q.dry_run).await?;
    Ok(report_response(report))
}

/// Parse and import a file's bytes (the API's and the UI's path).
pub async fn import_body(
    st: &AppState,
    format: Format,
    body: &[u8],
    dry_run: bool,
) -> ApiResult<Report> {
    match bulk::parse(format, body) {
        Ok(inputs) => Ok(st.domain.import_machines(inputs, dry_run).await?),
        Err(e) => Ok(file_refused(format, e)),
    }
}

/// The report of a file that could not be read at all: one row, the
/// header's line (CSV) or 0 (a JSON document that is not an array).
fn file_refused(format: Format, e: bulk::FieldError) -> Report {
    let line = match format {
        Format::Csv => 1,
        Format::Json => 0,
    };
    Report {
        applied: false,
        created: 0,
        updated: 0,
        unchanged: 0,
        rows: vec![RowReport {
            line,
            mac: String::new(),
            action: Action::Invalid,
            errors: vec![e],
        }],
    }
}

/// 422 for a refused import, 200 otherwise; the report either way.
fn report_response(report: Report) -> Response {
    let status = if report.has_errors() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    (status, axum::Json(report)).into_response()
}
