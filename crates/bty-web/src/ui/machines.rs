//! The machines list, the register form and bulk actions.
//!
//! Every change goes through the domain ([`crate::domain::Domain`]), the
//! REST API's own path, after the form's checks
//! ([`super::machine_form::validate`]).

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use bty_proto::{BootMode, Mac};
use serde::{Deserialize, Serialize};

use super::data::{self, Filter, ListQuery, RowView};
use super::is_htmx;
use super::machine_form::{inventory_of, validate, FieldErrors, MachineForm};
use super::render::{page_or_partial, render, Layout, UiError};
use crate::db::machines::{self, Machine, Settings};
use crate::db::sql;
use crate::state::AppState;

/// Page sizes offered.
pub const PER_PAGE: [u32; 4] = [10, 25, 50, 100];

/// `GET /ui/machines` query (all optional, bad values fall back).
#[derive(Debug, Default, Deserialize, Serialize, Clone)]
pub struct ListParams {
    #[serde(default)]
    q: Option<String>,
    #[serde(default)]
    filter: Option<String>,
    #[serde(default)]
    sort: Option<String>,
    #[serde(default)]
    dir: Option<String>,
    #[serde(default)]
    page: Option<String>,
    #[serde(default)]
    per_page: Option<String>,
    /// A notice after a redirect: `registered`, `deleted`, `updated`,
    /// `imported`.
    #[serde(default)]
    done: Option<String>,
    /// The machine or count the notice is about.
    #[serde(default)]
    what: Option<String>,
}

impl ListParams {
    /// The list a form was posted from (to show it again).
    fn from_form(get: impl Fn(&str) -> Option<String>) -> ListParams {
        ListParams {
            q: get("q"),
            filter: get("filter"),
            sort: get("sort"),
            dir: get("dir"),
            page: get("page"),
            per_page: get("per_page"),
            done: None,
            what: None,
        }
    }

    fn query(&self) -> ListQuery {
        let number = |v: &Option<String>| v.as_deref().and_then(|p| p.parse::<u32>().ok());
        let sort = data::SORTS
            .iter()
            .map(|(k, _)| *k)
            .find(|k| Some(*k) == self.sort.as_deref());
        ListQuery {
            q: self.q.as_deref().unwrap_or("").chars().take(100).collect(),
            filter: Filter::parse(self.filter.as_deref()),
            sort: sort.unwrap_or("mac"),
            desc: self.dir.as_deref() == Some("desc"),
            page: number(&self.page).filter(|p| *p >= 1).unwrap_or(1),
            per_page: number(&self.per_page)
                .filter(|p| PER_PAGE.contains(p))
                .unwrap_or(25),
        }
    }
}

#[derive(Serialize)]
struct ListView {
    layout: Layout,
    rows: Vec<RowView>,
    total: u64,
    q: String,
    filter: &'static str,
    filters: [&'static str; 5],
    sort: &'static str,
    sorts: Vec<&'static str>,
    desc: bool,
    page: u32,
    pages: u32,
    per_page: u32,
    per_pages: [u32; 4],
    /// `aabb..,ccdd..`: the rows the live stream watches.
    live_keys: String,
    notice: Option<String>,
    bulk_error: Vec<String>,
    images: Vec<String>,
    modes: Vec<&'static str>,
}

async fn list_view(
    st: &AppState,
    p: &ListParams,
    bulk_error: Vec<String>,
) -> Result<ListView, UiError> {
    let (q, rows, total, pages) = list_page(st, p.query()).await?;
    let live_keys: Vec<&str> = rows.iter().map(|r| r.key.as_str()).collect();
    Ok(ListView {
        layout: Layout::new(st, "Machines", "machines"),
        live_keys: live_keys.join(","),
        rows,
        total,
        q: q.q,
        filter: q.filter.as_str(),
        filters: ["all", "discovered", "assigned", "flashing", "failed"],
        sort: q.sort,
        sorts: data::SORTS.iter().map(|(k, _)| *k).collect(),
        desc: q.desc,
        page: q.page,
        pages,
        per_page: q.per_page,
        per_pages: PER_PAGE,
        notice: notice(p),
        bulk_error,
        images: image_names(st),
        modes: BootMode::ALL.iter().map(|m| m.as_str()).collect(),
    })
}

/// The rows of the page `q` asks for (the last page when it asks past
/// the end: machines were deleted meanwhile), the total and the number
/// of pages.
async fn list_page(
    st: &AppState,
    mut q: ListQuery,
) -> Result<(ListQuery, Vec<RowView>, u64, u32), UiError> {
    let query = q.clone();
    let (mut rows, mut total) = st.db.call(move |c| data::list(c, &query)).await??;
    let pages = (total.div_ceil(u64::from(q.per_page))).max(1) as u32;
    if q.page > pages {
        q.page = pages;
        let query = q.clone();
        (rows, total) = st.db.call(move |c| data::list(c, &query)).await??;
    }
    Ok((q, rows, total, pages))
}

/// The notice after a redirect (`done` and `what`).
fn notice(p: &ListParams) -> Option<String> {
    let mac = |m: &str| m.parse::<Mac>().ok();
    match (p.done.as_deref(), p.what.as_deref()) {
        (Some("registered"), Some(m)) => mac(m).map(|m| format!("Machine {m} registered.")),
        (Some("deleted"), Some(m)) => {
            mac(m).map(|m| format!("Machine {m} deleted. Its events are kept."))
        }
        (Some("updated"), Some(n)) => n
            .parse::<u32>()
            .ok()
            .map(|n| format!("{n} machine(s) updated.")),
        (Some("imported"), Some(n)) => n
            .parse::<u32>()
            .ok()
            .map(|n| format!("Import applied: {n} machine(s) created or updated.")),
        _ => None,
    }
}

pub fn image_names(st: &AppState) -> Vec<String> {
    st.catalog.snapshot().images.keys().cloned().collect()
}

/// `GET /ui/machines`.
pub async fn list(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(p): Query<ListParams>,
) -> Result<Response, UiError> {
    let t0 = std::time::Instant::now();
    let view = list_view(&st, &p, Vec::new()).await?;
    let t1 = std::time::Instant::now();
    let mut r = page_or_partial(is_htmx(&headers), "machines.html", &view, None)?;
    // The server's own time, for the load check and browser dev tools.
    let timing = format!(
        "db;dur={:.1}, render;dur={:.1}",
        (t1 - t0).as_secs_f64() * 1000.0,
        t1.elapsed().as_secs_f64() * 1000.0
    );
    if let Ok(v) = axum::http::HeaderValue::from_str(&timing) {
        r.headers_mut().insert("server-timing", v);
    }
    Ok(r)
}

#[derive(Serialize)]
struct NewView {
    layout: Layout,
    form: MachineForm,
    errors: FieldErrors,
    images: Vec<String>,
    modes: Vec<&'static str>,
    /// Always none: a machine being registered has reported no disks.
    disks: Option<()>,
    action: String,
    existing: Option<String>,
}

fn new_page(
    st: &AppState,
    status: StatusCode,
    form: MachineForm,
    errors: FieldErrors,
    existing: Option<String>,
) -> Result<Response, UiError> {
    let view = NewView {
        layout: Layout::new(st, "Register a machine", "machines"),
        form,
        errors,
        images: image_names(st),
        modes: BootMode::ALL.iter().map(|m| m.as_str()).collect(),
        disks: None,
        action: "/ui/machines".into(),
        existing,
    };
    let mut r = page_or_partial(false, "machine_new.html", &view, None)?;
    *r.status_mut() = status;
    Ok(r)
}

/// `GET /ui/machines/new`.
pub async fn new_form(State(st): State<AppState>) -> Result<Response, UiError> {
    let form = MachineForm {
        boot_mode: BootMode::IpxeExit.as_str().into(),
        ..Default::default()
    };
    new_page(&st, StatusCode::OK, form, FieldErrors::new(), None)
}

/// `POST /ui/machines`: register a new machine.
pub async fn register(
    State(st): State<AppState>,
    form: Result<Form<MachineForm>, axum::extract::rejection::FormRejection>,
) -> Result<Response, UiError> {
    let Form(f) = form.map_err(|e| UiError::bad_request(format!("the form was malformed: {e}")))?;
    let mac = match f.mac.trim().parse::<Mac>() {
        Ok(m) => m,
        Err(e) => {
            let errors = bad_mac(&st, &f, e);
            return new_page(&st, StatusCode::UNPROCESSABLE_ENTITY, f, errors, None);
        }
    };
    if st.db.call(move |c| machines::get(c, mac)).await??.is_some() {
        let why = format!("{mac} is already registered; change it on its own page instead");
        let errors = FieldErrors::from([("mac", why)]);
        return new_page(&st, StatusCode::CONFLICT, f, errors, Some(mac.to_string()));
    }
    match validate(&st, &f, None) {
        Ok(settings) => {
            st.domain.put_machine(mac, settings).await?;
            let to = format!("/ui/machines/{}?saved=registered", mac.hyphenated());
            Ok(Redirect::to(&to).into_response())
        }
        Err(errors) => new_page(&st, StatusCode::UNPROCESSABLE_ENTITY, f, errors, None),
    }
}

/// The MAC's problem, and the other fields' too.
fn bad_mac(st: &AppState, f: &MachineForm, e: bty_proto::MacError) -> FieldErrors {
    let mut errors = FieldErrors::from([("mac", format!("MAC: {e}"))]);
    if let Err(more) = validate(st, f, None) {
        errors.extend(more.into_iter().filter(|(k, _)| *k != "form"));
    }
    errors
}

/// A bulk action as posted.
struct Bulk {
    /// The list the operator was looking at (to show it again on error).
    list: ListParams,
    /// The selected rows.
    macs: Vec<Mac>,
    /// `assign` (an image) or `mode`.
    action: String,
    /// The image to assign.
    image: String,
    /// The mode to set.
    mode: String,
}

/// Read the bulk form; the problems found so far are the second value.
fn parse_bulk(pairs: &[(String, String)]) -> (Bulk, Vec<String>) {
    let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let list = ListParams::from_form(get);
    let mut errors = Vec::new();
    let mut macs = Vec::new();
    for (_, v) in pairs.iter().filter(|(k, _)| k == "mac") {
        match v.parse::<Mac>() {
            Ok(m) => macs.push(m),
            Err(e) => errors.push(format!("{v:?}: {e}")),
        }
    }
    if macs.is_empty() && errors.is_empty() {
        errors.push("Select at least one machine (the check boxes in the first column).".into());
    }
    let b = Bulk {
        list,
        macs,
        action: get("action").unwrap_or_default(),
        image: get("image").unwrap_or_default(),
        mode: get("boot_mode").unwrap_or_default(),
    };
    match b.action.as_str() {
        "assign" if b.image.is_empty() => errors.push("Pick the image to assign.".into()),
        "mode" if b.mode.is_empty() => errors.push("Pick the boot mode to set.".into()),
        "assign" | "mode" => {}
        _ => errors.push("Pick an action: assign an image or set the boot mode.".into()),
    }
    (b, errors)
}

/// Each selected machine's new settings, every one validated; the
/// problems go to `errors`.
async fn plan_bulk(
    st: &AppState,
    b: &Bulk,
    errors: &mut Vec<String>,
) -> Result<Vec<(Mac, Settings)>, UiError> {
    let macs = b.macs.clone();
    let found = st
        .db
        .call(move |c| -> sql::Result<Vec<(Mac, Option<Machine>)>> {
            macs.into_iter()
                .map(|m| Ok((m, machines::get(c, m)?)))
                .collect()
        })
        .await??;
    let mut planned = Vec::new();
    for (mac, m) in found {
        match plan_one(st, b, mac, m) {
            Ok(s) => planned.push((mac, s)),
            Err(e) => errors.push(e),
        }
    }
    Ok(planned)
}

/// One selected machine's new settings, or why not.
fn plan_one(st: &AppState, b: &Bulk, mac: Mac, m: Option<Machine>) -> Result<Settings, String> {
    let m = m.ok_or_else(|| format!("{mac}: no such machine (deleted meanwhile?)"))?;
    let mut f = MachineForm::from_machine(&m);
    if b.action == "assign" {
        f.image = b.image.clone();
    } else {
        f.boot_mode = b.mode.clone();
    }
    validate(st, &f, inventory_of(&m).as_ref())
        .map_err(|e| format!("{mac}: {}", e.into_values().collect::<Vec<_>>().join("; ")))
}

/// `POST /ui/machines/bulk`: assign an image or set the mode of the
/// selected machines; every one is validated first and nothing is saved
/// if one fails.
pub async fn bulk(
    State(st): State<AppState>,
    form: Result<Form<Vec<(String, String)>>, axum::extract::rejection::FormRejection>,
) -> Result<Response, UiError> {
    let Form(pairs) =
        form.map_err(|e| UiError::bad_request(format!("the form was malformed: {e}")))?;
    let (b, mut errors) = parse_bulk(&pairs);
    let mut planned = Vec::new();
    if errors.is_empty() {
        planned = plan_bulk(&st, &b, &mut errors).await?;
    }
    if !errors.is_empty() {
        errors.insert(0, "Nothing was changed:".into());
        let view = list_view(&st, &b.list, errors).await?;
        let mut r = page_or_partial(false, "machines.html", &view, None)?;
        *r.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
        return Ok(r);
    }
    let n = planned.len();
    for (mac, s) in planned {
        st.domain.put_machine(mac, s).await?;
    }
    let mut back = serde_urlencoded_list(&b.list);
    back.push_str(&format!("&done=updated&what={n}"));
    Ok(Redirect::to(&format!("/ui/machines?{back}")).into_response())
}

fn serde_urlencoded_list(p: &ListParams) -> String {
    let enc = bty_http::encode::query_value;
    let q = p.query();
    format!(
        "q={}&filter={}&sort={}&dir={}&page={}&per_page={}",
        enc(&q.q),
        q.filter.as_str(),
        q.sort,
        if q.desc { "desc" } else { "asc" },
        q.page,
        q.per_page
    )
}

/// Render one list row (the live stream uses it).
pub fn row_html(row: &RowView) -> Result<String, UiError> {
    #[derive(Serialize)]
    struct Ctx<'a> {
        r: &'a RowView,
    }
    render("machine_row.html", &Ctx { r: row }, None).map(|s| s.trim().to_string())
}
