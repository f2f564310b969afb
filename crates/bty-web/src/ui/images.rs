//! The Images page: the catalog, its sources' health, and adding and
//! removing images (through [`crate::domain::images`], the REST API's
//! path).

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use bty_proto::ImageFormat;
use serde::{Deserialize, Serialize};

use super::health::{source_health, Health};
use super::is_htmx;
use super::render::{page_or_partial, Layout, UiError};
use crate::catalog::Image;
use crate::domain::images::{AddError, NewImage};
use crate::domain::DomainError;
use crate::state::AppState;

#[derive(Serialize)]
struct ImagesView {
    layout: Layout,
    images: Vec<Image>,
    withcache_url: Option<String>,
    static_file: Option<String>,
    health: Vec<Health>,
    problems: Vec<String>,
    notice: Option<String>,
    /// A refused delete.
    error: Option<String>,
    /// withcache is configured: the Add form is shown.
    can_add: bool,
    form: ImageForm,
    errors: BTreeMap<&'static str, String>,
    formats: Vec<&'static str>,
}

/// `GET /ui/images` query: the notice after a redirect.
#[derive(Deserialize)]
pub struct ImagesQuery {
    refreshed: Option<String>,
    added: Option<String>,
    deleted: Option<String>,
}

/// The Add image form as typed.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
pub struct ImageForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    url: String,
    #[serde(default)]
    sha256: String,
    #[serde(default)]
    size: String,
    #[serde(default)]
    format: String,
}

/// What one rendering of the Images page says besides the catalog.
#[derive(Default)]
struct ImagesPage {
    notice: Option<String>,
    error: Option<String>,
    form: ImageForm,
    errors: BTreeMap<&'static str, String>,
}

fn images_page(
    st: &AppState,
    hx: bool,
    status: StatusCode,
    page: ImagesPage,
) -> Result<Response, UiError> {
    let snap = st.catalog.snapshot();
    let view = ImagesView {
        layout: Layout::new(st, "Images", "images"),
        images: snap.images.values().cloned().collect(),
        withcache_url: st.catalog.withcache_url().map(str::to_string),
        static_file: st.catalog.file().map(|p| p.display().to_string()),
        health: vec![
            source_health("withcache", &snap.withcache, None),
            source_health("Static catalog", &snap.static_file, None),
        ],
        problems: snap.problems.clone(),
        notice: page.notice,
        error: page.error,
        can_add: st.catalog.withcache().is_some(),
        form: page.form,
        errors: page.errors,
        formats: ImageFormat::ALL.iter().map(|f| f.as_str()).collect(),
    };
    let mut r = page_or_partial(hx, "images.html", &view, None)?;
    *r.status_mut() = status;
    Ok(r)
}

/// Only names that pass the catalog's rules are echoed in a notice.
fn valid_image_name(n: Option<&str>) -> Option<&str> {
    n.filter(|n| bty_proto::text::validate_image_name(n).is_ok())
}

/// `GET /ui/images`.
pub async fn show(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<ImagesQuery>,
) -> Result<Response, UiError> {
    let notice = if let Some(n) = valid_image_name(q.added.as_deref()) {
        Some(format!(
            "Image {n} added: withcache is downloading it, and machines can be assigned it now."
        ))
    } else if let Some(n) = valid_image_name(q.deleted.as_deref()) {
        Some(format!("Image {n} removed from the catalog."))
    } else {
        q.refreshed
            .is_some()
            .then(|| "Catalog re-read.".to_string())
    };
    let page = ImagesPage {
        notice,
        ..Default::default()
    };
    images_page(&st, is_htmx(&headers), StatusCode::OK, page)
}

/// `POST /ui/images/refresh`: re-read the file and poll withcache now.
pub async fn refresh(State(st): State<AppState>) -> Response {
    st.catalog.refresh(true, true).await;
    Redirect::to("/ui/images?refreshed=1").into_response()
}

/// `POST /ui/images`: the Add image form, through [`crate::domain::images::add`]
/// (the REST API's path). Bad input shows the page again with each
/// field's message and the typed values; nothing is saved.
pub async fn add(
    State(st): State<AppState>,
    form: Result<Form<ImageForm>, axum::extract::rejection::FormRejection>,
) -> Result<Response, UiError> {
    let Form(f) = form.map_err(|e| UiError::bad_request(format!("the form was malformed: {e}")))?;
    match add_form(&st, &f).await {
        Ok(img) => {
            let to = format!("/ui/images?added={}", img.entry.name.replace('+', "%2B"));
            Ok(Redirect::to(&to).into_response())
        }
        Err(e) => {
            let (status, errors) = match e {
                AddError::Fields(errors) => (StatusCode::UNPROCESSABLE_ENTITY, errors),
                e => {
                    let errors = BTreeMap::from([("form", e.reason())]);
                    (UiError::from(DomainError::from(e)).status, errors)
                }
            };
            let page = ImagesPage {
                form: f,
                errors,
                ..Default::default()
            };
            images_page(&st, false, status, page)
        }
    }
}

/// Add the image the form describes; a size that is not a number is
/// reported together with every other field's problem.
async fn add_form(st: &AppState, f: &ImageForm) -> Result<Image, AddError> {
    let size = match f.size.trim() {
        "" => Ok(None),
        s => s.parse::<u64>().map(Some).map_err(|_| {
            "size: must be a whole number of bytes greater than 0 (or empty)".to_string()
        }),
    };
    let new = NewImage {
        name: f.name.clone(),
        url: f.url.clone(),
        sha256: Some(f.sha256.clone()),
        size: size.clone().unwrap_or(None),
        format: Some(f.format.clone()),
    };
    let Err(msg) = size else {
        return st.domain.add_image(&new).await;
    };
    let mut errors = st.domain.validate_image(&new).err().unwrap_or_default();
    errors.insert("size", msg);
    Err(AddError::Fields(errors))
}

/// `POST /ui/images/{name}/delete`: remove a withcache-sourced image.
pub async fn delete(
    State(st): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, UiError> {
    match st.domain.remove_image(&name).await {
        Ok(()) => {
            let to = format!("/ui/images?deleted={}", name.replace('+', "%2B"));
            Ok(Redirect::to(&to).into_response())
        }
        Err(e) => {
            let page = ImagesPage {
                error: Some(format!("Nothing was removed: {}", e.message())),
                ..Default::default()
            };
            images_page(&st, false, UiError::from(DomainError::from(e)).status, page)
        }
    }
}
