//! The Machines page's import: upload a CSV (or JSON) file or paste it,
//! see what each row would do and each row's errors, then apply it all
//! or nothing. The same path as `POST /api/machines/import`
//! ([`crate::routes::bulk::import_body`]), so the page and the API accept
//! exactly the same files.
//!
//! The form is `multipart/form-data` (a file input needs it); the
//! preview carries the file's text in a hidden field, so "Apply" sends
//! exactly what was previewed.

use axum::extract::{Multipart, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Serialize;

use super::render::{page_or_partial, Layout, UiError};
use crate::domain::bulk::{Format, Report, COLUMNS, LABEL_SEP};
use crate::state::AppState;

#[derive(Serialize, Default)]
struct ImportView {
    layout: Option<Layout>,
    /// The file's text (carried to "Apply").
    content: String,
    /// `csv` or `json`.
    format: &'static str,
    /// The preview, once a file was sent.
    report: Option<Report>,
    /// Some row has errors: nothing can be applied.
    refused: bool,
    /// A problem with the form itself.
    error: Option<String>,
    columns: String,
    label_sep: char,
}

fn page(st: &AppState, status: StatusCode, mut v: ImportView) -> Result<Response, UiError> {
    v.layout = Some(Layout::new(st, "Import machines", "machines"));
    v.columns = COLUMNS.join(",");
    v.label_sep = LABEL_SEP;
    if v.format.is_empty() {
        v.format = "csv";
    }
    let mut r = page_or_partial(false, "machines_import.html", &v, None)?;
    *r.status_mut() = status;
    Ok(r)
}

/// `GET /ui/machines/import`: the upload form.
pub async fn form(State(st): State<AppState>) -> Result<Response, UiError> {
    page(&st, StatusCode::OK, ImportView::default())
}

/// What the form sent.
#[derive(Default)]
struct Sent {
    /// The uploaded file's bytes and name, if a file was chosen.
    file: Option<(Vec<u8>, String)>,
    /// The pasted (or carried) text.
    content: String,
    format: Option<String>,
    apply: bool,
}

async fn read_form(mut m: Multipart) -> Result<Sent, UiError> {
    let bad = |e: axum::extract::multipart::MultipartError| {
        UiError::bad_request(format!("the form was malformed: {}", e.body_text()))
    };
    let mut sent = Sent::default();
    while let Some(field) = m.next_field().await.map_err(bad)? {
        let name = field.name().unwrap_or("").to_string();
        match name.as_str() {
            "file" => {
                let fname = field.file_name().unwrap_or("").to_string();
                let bytes = field.bytes().await.map_err(bad)?;
                if !bytes.is_empty() {
                    sent.file = Some((bytes.to_vec(), fname));
                }
            }
            "content" => sent.content = field.text().await.map_err(bad)?,
            "format" => sent.format = Some(field.text().await.map_err(bad)?),
            "apply" => sent.apply = true,
            _ => {}
        }
    }
    Ok(sent)
}

/// The format of what was sent: the file's extension, else the form's
/// `format`, else CSV.
fn format_of(sent: &Sent) -> Format {
    let by_name = sent.file.as_ref().and_then(|(_, n)| {
        let ext = n.rsplit_once('.')?.1;
        Format::parse(ext)
    });
    by_name
        .or_else(|| sent.format.as_deref().and_then(Format::parse))
        .unwrap_or(Format::Csv)
}

/// `POST /ui/machines/import`: preview (no `apply`), or apply all or
/// nothing and go back to the list.
pub async fn submit(State(st): State<AppState>, m: Multipart) -> Result<Response, UiError> {
    let sent = read_form(m).await?;
    let format = format_of(&sent);
    let format_name = match format {
        Format::Csv => "csv",
        Format::Json => "json",
    };
    let content = match &sent.file {
        Some((bytes, name)) => match String::from_utf8(bytes.clone()) {
            Ok(s) => s,
            Err(_) => {
                let v = ImportView {
                    error: Some(format!("{name} is not UTF-8 text; save it as UTF-8 CSV")),
                    ..ImportView::default()
                };
                return page(&st, StatusCode::UNPROCESSABLE_ENTITY, v);
            }
        },
        None => sent.content.clone(),
    };
    if content.trim().is_empty() {
        let v = ImportView {
            error: Some("Choose a file (or paste its text) first.".into()),
            ..ImportView::default()
        };
        return page(&st, StatusCode::UNPROCESSABLE_ENTITY, v);
    }
    let report = crate::routes::bulk::import_body(&st, format, content.as_bytes(), !sent.apply)
        .await
        .map_err(|e| UiError {
            status: e.status,
            message: e.message,
        })?;
    if report.applied {
        let n = report.created + report.updated;
        return Ok(Redirect::to(&format!("/ui/machines?done=imported&what={n}")).into_response());
    }
    let status = if report.has_errors() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    let v = ImportView {
        content,
        format: format_name,
        refused: report.has_errors(),
        report: Some(report),
        ..ImportView::default()
    };
    page(&st, status, v)
}
