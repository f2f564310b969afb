//! The Misses page (`/ui/misses`): URLs clients asked for that are not in
//! the catalog, with one click to add and download or to dismiss.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Form, Query, State};
use axum::response::Response;
use bty_http::Layout;
use http::StatusCode;
use serde::Serialize;

use super::catalog::UrlForm;
use super::{broken, done, failure, page, DoneQuery};
use crate::app::App;
use crate::catalog::Who;
use crate::db::MissRow;
use crate::error::Error;

#[derive(Serialize)]
struct MissesCtx {
    layout: Layout,
    misses: Vec<MissRow>,
    error: Option<String>,
    notice: Option<String>,
}

fn misses_page(app: &App, notice: Option<String>, fail: Option<(StatusCode, String)>) -> Response {
    let misses = match app.catalog.misses() {
        Ok(m) => m,
        Err(e) => return broken(&e),
    };
    let (status, error) = match fail {
        Some((s, m)) => (s, Some(m)),
        None => (StatusCode::OK, None),
    };
    let ctx = MissesCtx {
        layout: Layout::new(app, "Misses", "misses"),
        misses,
        error,
        notice,
    };
    page(status, "misses.html", &ctx)
}

pub(super) async fn show(State(app): State<Arc<App>>, Query(q): Query<DoneQuery>) -> Response {
    misses_page(&app, q.notice(), None)
}

pub(super) async fn fetch(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Form(f): Form<UrlForm>,
) -> Response {
    let who = Who {
        actor: "operator",
        ip: Some(peer.ip()),
    };
    match app.catalog.promote_miss(f.url.trim(), who) {
        Ok(name) => done("/ui/catalog", &name, "promoted"),
        Err(e) => misses_page(&app, None, Some(failure(&e))),
    }
}

pub(super) async fn dismiss(State(app): State<Arc<App>>, Form(f): Form<UrlForm>) -> Response {
    match app.catalog.dismiss_miss(f.url.trim()) {
        Ok(()) => done("/ui/misses", "", "dismissed"),
        Err(Error::NotFound(_)) => misses_page(
            &app,
            None,
            Some((
                StatusCode::NOT_FOUND,
                format!(
                    "No miss is recorded for {:?}. Nothing was changed.",
                    f.url.trim()
                ),
            )),
        ),
        Err(e) => misses_page(&app, None, Some(failure(&e))),
    }
}
