//! The machines list, the register form, bulk actions and the machine
//! detail page (record, inventory, live cycle, history, events, the iPXE
//! script it would get now, edit and delete).
//!
//! Every change goes through [`routes::api::validate_put`] and
//! [`cycle::put_machine`], the REST API's own path, so the UI and the API
//! accept exactly the same machines. The UI checks each field first on
//! its own so a form shows every problem at once, next to its field.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use bty_proto::inventory::Inventory;
use bty_proto::{text, BootMode, Mac};
use serde::{Deserialize, Serialize};

use super::data::{self, EventQuery, EventView, Filter, ListQuery, ProgressView, RowView};
use super::is_htmx;
use super::render::{page_or_partial, render, Layout, UiError};
use crate::cycle;
use crate::db::cycles::{self, Cycle};
use crate::db::machines::{self, Machine, Settings};
use crate::ipxe::ScriptCycle;
use crate::pxe::{self, Contact, CycleChoice, CycleFacts, Inputs, Offer};
use crate::routes::api::{validate_put, MachinePut, MAX_LABELS};
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
    /// A notice after a redirect: `registered`, `deleted`, `updated`.
    #[serde(default)]
    done: Option<String>,
    /// The machine or count the notice is about.
    #[serde(default)]
    what: Option<String>,
}

impl ListParams {
    fn query(&self) -> ListQuery {
        let sort = data::SORTS
            .iter()
            .map(|(k, _)| *k)
            .find(|k| Some(*k) == self.sort.as_deref())
            .unwrap_or("mac");
        let per_page = self
            .per_page
            .as_deref()
            .and_then(|p| p.parse().ok())
            .filter(|p| PER_PAGE.contains(p))
            .unwrap_or(25);
        ListQuery {
            q: self
                .q
                .clone()
                .unwrap_or_default()
                .chars()
                .take(100)
                .collect(),
            filter: Filter::parse(self.filter.as_deref()),
            sort,
            desc: self.dir.as_deref() == Some("desc"),
            page: self
                .page
                .as_deref()
                .and_then(|p| p.parse().ok())
                .filter(|p| *p >= 1)
                .unwrap_or(1),
            per_page,
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
    let mut q = p.query();
    let query = q.clone();
    let (mut rows, mut total) = st.db.call(move |c| data::list(c, &query)).await??;
    let pages = (total.div_ceil(u64::from(q.per_page))).max(1) as u32;
    if q.page > pages {
        // Past the end (machines were deleted meanwhile): show the last page.
        q.page = pages;
        let query = q.clone();
        (rows, total) = st.db.call(move |c| data::list(c, &query)).await??;
    }
    let notice = match (p.done.as_deref(), p.what.as_deref()) {
        (Some("registered"), Some(m)) => m
            .parse::<Mac>()
            .ok()
            .map(|m| format!("Machine {m} registered.")),
        (Some("deleted"), Some(m)) => m
            .parse::<Mac>()
            .ok()
            .map(|m| format!("Machine {m} deleted. Its events are kept.")),
        (Some("updated"), Some(n)) => n
            .parse::<u32>()
            .ok()
            .map(|n| format!("{n} machine(s) updated.")),
        _ => None,
    };
    Ok(ListView {
        layout: Layout::new(st, "Machines", "machines"),
        live_keys: rows
            .iter()
            .map(|r| r.key.as_str())
            .collect::<Vec<_>>()
            .join(","),
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
        notice,
        bulk_error,
        images: image_names(st),
        modes: BootMode::ALL.iter().map(|m| m.as_str()).collect(),
    })
}

fn image_names(st: &AppState) -> Vec<String> {
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

/// The register / edit form's fields, as typed.
#[derive(Debug, Default, Deserialize, Serialize, Clone)]
pub struct MachineForm {
    #[serde(default)]
    mac: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    image: String,
    #[serde(default)]
    boot_mode: String,
    #[serde(default)]
    target_disk_serial: String,
    #[serde(default)]
    sanboot_drive: String,
    #[serde(default)]
    labels: String,
}

impl MachineForm {
    fn from_machine(m: &Machine) -> MachineForm {
        MachineForm {
            mac: m.mac.to_string(),
            name: m.name.clone().unwrap_or_default(),
            image: m.image.clone().unwrap_or_default(),
            boot_mode: m.boot_mode.as_str().into(),
            target_disk_serial: m.target_disk_serial.clone().unwrap_or_default(),
            sanboot_drive: m.sanboot_drive.clone().unwrap_or_default(),
            labels: m.labels.join(", "),
        }
    }

    fn labels(&self) -> Vec<String> {
        self.labels
            .split(',')
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect()
    }
}

/// A disk the target select offers.
#[derive(Debug, Clone, Serialize)]
struct DiskOption {
    serial: Option<String>,
    text: String,
}

fn disk_options(inv: Option<&Inventory>) -> Option<Vec<DiskOption>> {
    let inv = inv?;
    Some(
        inv.disks
            .iter()
            .map(|d| DiskOption {
                serial: d
                    .serial
                    .clone()
                    .filter(|s| text::validate_serial(s).is_ok()),
                text: format!(
                    "{} {}{}{}",
                    d.serial
                        .as_deref()
                        .unwrap_or("(no serial: cannot be a target)"),
                    d.name,
                    d.size_bytes
                        .map(|b| format!(", {}", super::render::human_bytes(b)))
                        .unwrap_or_default(),
                    d.model
                        .as_deref()
                        .map(|m| format!(", {m}"))
                        .unwrap_or_default(),
                ),
            })
            .collect(),
    )
}

fn inventory_of(m: &Machine) -> Option<Inventory> {
    m.inventory
        .clone()
        .and_then(|v| serde_json::from_value(v).ok())
}

/// Check every field on its own (so all problems show at once), then the
/// API's validator as the final word. `Err` maps field → message.
fn validate(
    st: &AppState,
    f: &MachineForm,
    inventory: Option<&Inventory>,
) -> Result<Settings, BTreeMap<&'static str, String>> {
    let mut errors: BTreeMap<&'static str, String> = BTreeMap::new();
    let mode = if f.boot_mode.is_empty() {
        Some(BootMode::IpxeExit)
    } else {
        match f.boot_mode.parse::<BootMode>() {
            Ok(m) => Some(m),
            Err(e) => {
                errors.insert("boot_mode", e.to_string());
                None
            }
        }
    };
    let name = f.name.trim();
    if !name.is_empty() {
        if let Err(e) = text::validate_name("name", name) {
            errors.insert("name", e.to_string());
        }
    }
    let image = f.image.trim();
    if !image.is_empty() && st.catalog.snapshot().get(image).is_none() {
        errors.insert(
            "image",
            format!("image {image:?} is not in the catalog; pick one from the list (see Images)"),
        );
    }
    let serial = f.target_disk_serial.trim();
    if !serial.is_empty() {
        if let Err(e) = text::validate_serial(serial) {
            errors.insert("target_disk_serial", e.to_string());
        } else if let Some(inv) = inventory {
            if !inv
                .disks
                .iter()
                .any(|d| d.serial.as_deref() == Some(serial))
            {
                let known: Vec<&str> = inv
                    .disks
                    .iter()
                    .filter_map(|d| d.serial.as_deref())
                    .collect();
                errors.insert(
                    "target_disk_serial",
                    format!(
                        "target_disk_serial: {serial:?} is not one of the disks this machine reported ({})",
                        if known.is_empty() { "none with a serial".into() } else { known.join(", ") }
                    ),
                );
            }
        }
    }
    let drive = f.sanboot_drive.trim();
    if !drive.is_empty() {
        if let Err(e) = text::validate_sanboot_drive(drive) {
            errors.insert("sanboot_drive", e.to_string());
        }
    }
    let labels = f.labels();
    if labels.len() > MAX_LABELS {
        errors.insert("labels", format!("labels: at most {MAX_LABELS} labels"));
    }
    for l in &labels {
        if let Err(e) = text::validate_label(l) {
            errors.insert(
                "labels",
                format!("{e} (label {l:?}; separate labels with commas)"),
            );
            break;
        }
    }
    if let Some(m) = mode.filter(|m| m.flashes()) {
        if image.is_empty() {
            errors
                .entry("image")
                .or_insert(format!("boot mode {m} flashes an image: pick one"));
        }
        if serial.is_empty() {
            errors.entry("target_disk_serial").or_insert(format!(
                "boot mode {m} writes a disk: give the target disk's serial{}",
                if inventory.is_some() {
                    " (pick one of the reported disks)"
                } else {
                    ""
                }
            ));
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let put = MachinePut {
        boot_mode: Some(f.boot_mode.clone()),
        image: Some(image.to_string()),
        target_disk_serial: Some(serial.to_string()),
        sanboot_drive: Some(drive.to_string()),
        labels,
        name: Some(name.to_string()),
    };
    validate_put(st, put).map_err(|e| {
        let mut m = BTreeMap::new();
        m.insert("form", e.message);
        m
    })
}

#[derive(Serialize)]
struct NewView {
    layout: Layout,
    form: MachineForm,
    errors: BTreeMap<&'static str, String>,
    images: Vec<String>,
    modes: Vec<&'static str>,
    disks: Option<Vec<DiskOption>>,
    action: String,
    existing: Option<String>,
}

fn new_page(
    st: &AppState,
    status: StatusCode,
    form: MachineForm,
    errors: BTreeMap<&'static str, String>,
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
    new_page(&st, StatusCode::OK, form, BTreeMap::new(), None)
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
            let mut errors = BTreeMap::new();
            errors.insert("mac", format!("MAC: {e}"));
            // Report the other fields' problems too.
            if let Err(more) = validate(&st, &f, None) {
                errors.extend(more.into_iter().filter(|(k, _)| *k != "form"));
            }
            return new_page(&st, StatusCode::UNPROCESSABLE_ENTITY, f, errors, None);
        }
    };
    if st.db.call(move |c| machines::get(c, mac)).await??.is_some() {
        let mut errors = BTreeMap::new();
        errors.insert(
            "mac",
            format!("{mac} is already registered; change it on its own page instead"),
        );
        return new_page(&st, StatusCode::CONFLICT, f, errors, Some(mac.to_string()));
    }
    let settings = match validate(&st, &f, None) {
        Ok(s) => s,
        Err(errors) => return new_page(&st, StatusCode::UNPROCESSABLE_ENTITY, f, errors, None),
    };
    let (_, _, bus) = st
        .db
        .call(move |c| cycle::put_machine(c, mac, &settings))
        .await??;
    st.publish(bus);
    Ok(Redirect::to(&format!(
        "/ui/machines/{}?saved=registered",
        mac.hyphenated()
    ))
    .into_response())
}

/// `POST /ui/machines/bulk` form: the selected rows, the action and the
/// list the operator was looking at (to show it again on error).
pub async fn bulk(
    State(st): State<AppState>,
    form: Result<Form<Vec<(String, String)>>, axum::extract::rejection::FormRejection>,
) -> Result<Response, UiError> {
    let Form(pairs) =
        form.map_err(|e| UiError::bad_request(format!("the form was malformed: {e}")))?;
    let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let list = ListParams {
        q: get("q"),
        filter: get("filter"),
        sort: get("sort"),
        dir: get("dir"),
        page: get("page"),
        per_page: get("per_page"),
        done: None,
        what: None,
    };
    let mut errors = Vec::new();
    let mut macs = Vec::new();
    for (_, v) in pairs.iter().filter(|(k, _)| k == "mac") {
        match v.parse::<Mac>() {
            Ok(m) => macs.push(m),
            Err(e) => errors.push(format!("{v:?}: {e}")),
        }
    }
    let action = get("action").unwrap_or_default();
    if macs.is_empty() && errors.is_empty() {
        errors.push("Select at least one machine (the check boxes in the first column).".into());
    }
    let image = get("image").unwrap_or_default();
    let mode = get("boot_mode").unwrap_or_default();
    match action.as_str() {
        "assign" if image.is_empty() => errors.push("Pick the image to assign.".into()),
        "mode" if mode.is_empty() => errors.push("Pick the boot mode to set.".into()),
        "assign" | "mode" => {}
        _ => errors.push("Pick an action: assign an image or set the boot mode.".into()),
    }
    // Validate every selected machine first; save nothing if one fails.
    let mut planned = Vec::new();
    if errors.is_empty() {
        let found = st
            .db
            .call({
                let macs = macs.clone();
                move |c| -> rusqlite::Result<Vec<(Mac, Option<Machine>)>> {
                    macs.into_iter()
                        .map(|m| Ok((m, machines::get(c, m)?)))
                        .collect()
                }
            })
            .await??;
        for (mac, m) in found {
            let Some(m) = m else {
                errors.push(format!("{mac}: no such machine (deleted meanwhile?)"));
                continue;
            };
            let mut f = MachineForm::from_machine(&m);
            if action == "assign" {
                f.image = image.clone();
            } else {
                f.boot_mode = mode.clone();
            }
            match validate(&st, &f, inventory_of(&m).as_ref()) {
                Ok(s) => planned.push((mac, s)),
                Err(e) => errors.push(format!(
                    "{mac}: {}",
                    e.into_values().collect::<Vec<_>>().join("; ")
                )),
            }
        }
    }
    if !errors.is_empty() {
        errors.insert(0, "Nothing was changed:".into());
        let view = list_view(&st, &list, errors).await?;
        let mut r = page_or_partial(false, "machines.html", &view, None)?;
        *r.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
        return Ok(r);
    }
    let n = planned.len();
    for (mac, s) in planned {
        let (_, _, bus) = st
            .db
            .call(move |c| cycle::put_machine(c, mac, &s))
            .await??;
        st.publish(bus);
    }
    let mut back = serde_urlencoded_list(&list);
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

/// Everything the detail page shows about the current state; also the
/// `status` fragment the live stream swaps.
#[derive(Debug, Serialize)]
pub struct StatusView {
    /// Machine.
    pub mac: String,
    /// Its row (state word, labels).
    pub row: Option<RowView>,
    /// The current cycle.
    pub cycle: Option<Cycle>,
    /// Its progress when open.
    pub progress: Option<ProgressView>,
    /// Latest successful flash.
    pub last_flash: Option<Cycle>,
}

/// Load the status fragment's data.
pub fn status_view(conn: &rusqlite::Connection, m: &Machine) -> rusqlite::Result<StatusView> {
    let mac = m.mac.to_string();
    let cycle = cycles::current(conn, m.mac, m.arm_gen)?;
    let progress = cycle.as_ref().filter(|c| c.state.is_open()).map(|c| {
        ProgressView::new(
            c.id,
            c.state.as_str(),
            c.phase.as_deref(),
            c.bytes_done,
            c.bytes_total,
            c.rate,
        )
    });
    let last_flash = {
        use rusqlite::OptionalExtension;
        let id: Option<i64> = conn
            .prepare_cached(
                "SELECT id FROM cycles WHERE mac = ?1 AND state = 'done' ORDER BY id DESC LIMIT 1",
            )?
            .query_row([&mac], |r| r.get(0))
            .optional()?;
        match id {
            Some(id) => cycles::get(conn, id)?,
            None => None,
        }
    };
    Ok(StatusView {
        row: data::row_of(conn, &mac)?,
        mac,
        cycle,
        progress,
        last_flash,
    })
}

#[derive(Serialize)]
struct DetailView {
    layout: Layout,
    machine: Machine,
    key: String,
    status: StatusView,
    history: Vec<Cycle>,
    events: Vec<EventView>,
    inventory: Option<Inventory>,
    disks: Option<Vec<DiskOption>>,
    ipxe: String,
    ipxe_note: String,
    form: MachineForm,
    errors: BTreeMap<&'static str, String>,
    images: Vec<String>,
    modes: Vec<&'static str>,
    action: String,
    saved: Option<String>,
}

fn parse_path_mac(raw: &str) -> Result<Mac, UiError> {
    raw.parse::<Mac>()
        .map_err(|e| UiError::bad_request(format!("{raw:?} is not a MAC address: {e}")))
}

async fn detail_page(
    st: &AppState,
    headers: &HeaderMap,
    mac: Mac,
    form: Option<MachineForm>,
    errors: BTreeMap<&'static str, String>,
    saved: Option<String>,
    status: StatusCode,
) -> Result<Response, UiError> {
    let loaded = st
        .db
        .call(move |c| -> rusqlite::Result<_> {
            let Some(m) = machines::get(c, mac)? else {
                return Ok(None);
            };
            let status = status_view(c, &m)?;
            let history = cycles::history(c, mac, 50)?;
            let events = data::events(
                c,
                &EventQuery {
                    mac: Some(mac.to_string()),
                    limit: 20,
                    ..Default::default()
                },
            )?;
            Ok(Some((m, status, history, events)))
        })
        .await??;
    let Some((m, status_v, history, events)) = loaded else {
        return Err(UiError::not_found(format!(
            "No machine {mac} is registered. It may have been deleted; see Machines."
        )));
    };
    let inventory = inventory_of(&m);
    let (ipxe, ipxe_note) = preview(st, headers, &m, status_v.cycle.as_ref());
    let view = DetailView {
        layout: Layout::new(
            st,
            m.name.clone().unwrap_or_else(|| mac.to_string()),
            "machines",
        ),
        key: mac.to_string().replace(':', ""),
        form: form.unwrap_or_else(|| MachineForm::from_machine(&m)),
        disks: disk_options(inventory.as_ref()),
        inventory,
        status: status_v,
        history,
        events,
        ipxe,
        ipxe_note,
        errors,
        images: image_names(st),
        modes: BootMode::ALL.iter().map(|m| m.as_str()).collect(),
        action: format!("/ui/machines/{}", mac.hyphenated()),
        saved,
        machine: m,
    };
    let mut r = page_or_partial(is_htmx(headers), "machine.html", &view, None)?;
    *r.status_mut() = status;
    Ok(r)
}

/// `GET /ui/machines/{mac}` query.
#[derive(Deserialize)]
pub struct ShowQuery {
    saved: Option<String>,
}

/// `GET /ui/machines/{mac}`.
pub async fn show(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    Query(q): Query<ShowQuery>,
) -> Result<Response, UiError> {
    let mac = parse_path_mac(&raw)?;
    let saved = match q.saved.as_deref() {
        Some("registered") => Some("Machine registered.".to_string()),
        Some("updated") => Some("Changes saved.".to_string()),
        _ => None,
    };
    detail_page(
        &st,
        &headers,
        mac,
        None,
        BTreeMap::new(),
        saved,
        StatusCode::OK,
    )
    .await
}

/// `POST /ui/machines/{mac}`: save the edit form.
pub async fn edit(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    form: Result<Form<MachineForm>, axum::extract::rejection::FormRejection>,
) -> Result<Response, UiError> {
    let mac = parse_path_mac(&raw)?;
    let Form(mut f) =
        form.map_err(|e| UiError::bad_request(format!("the form was malformed: {e}")))?;
    f.mac = mac.to_string();
    let Some(m) = st.db.call(move |c| machines::get(c, mac)).await?? else {
        return Err(UiError::not_found(format!(
            "No machine {mac} is registered; nothing was saved."
        )));
    };
    match validate(&st, &f, inventory_of(&m).as_ref()) {
        Ok(settings) => {
            let (_, _, bus) = st
                .db
                .call(move |c| cycle::put_machine(c, mac, &settings))
                .await??;
            st.publish(bus);
            Ok(
                Redirect::to(&format!("/ui/machines/{}?saved=updated", mac.hyphenated()))
                    .into_response(),
            )
        }
        Err(errors) => {
            detail_page(
                &st,
                &headers,
                mac,
                Some(f),
                errors,
                None,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await
        }
    }
}

/// `POST /ui/machines/{mac}/delete`.
pub async fn delete(
    State(st): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Response, UiError> {
    let mac = parse_path_mac(&raw)?;
    match st.db.call(move |c| cycle::delete_machine(c, mac)).await?? {
        Some(bus) => {
            st.publish(bus);
            Ok(Redirect::to(&format!(
                "/ui/machines?done=deleted&what={}",
                mac.hyphenated()
            ))
            .into_response())
        }
        None => Err(UiError::not_found(format!(
            "No machine {mac} is registered; nothing was deleted."
        ))),
    }
}

/// The script `GET /pxe/{mac}` would answer now, computed with the same
/// pure decision but without applying anything (no cycle is created, no
/// event is logged).
fn preview(
    st: &AppState,
    headers: &HeaderMap,
    m: &Machine,
    current: Option<&Cycle>,
) -> (String, String) {
    let host = crate::routes::host(headers).unwrap_or_else(|_| st.cfg.server.listen.clone());
    let snap = st.catalog.snapshot();
    let current = current.filter(|_| m.boot_mode.flashes());
    let inputs = Inputs {
        mode: m.boot_mode,
        has_image: m.image.is_some(),
        has_target: m.target_disk_serial.is_some(),
        image_available: m.image.as_deref().and_then(|n| snap.get(n)).is_some(),
        parked: m.parked_reason.is_some(),
        inventory_local_next: m.inventory_local_next,
        current: current.map(|c| CycleFacts {
            id: c.id,
            state: c.state,
            attempt: c.attempt,
            local_served: c.local_served,
        }),
        max_attempts: st.cfg.flash.max_attempts,
    };
    let d = pxe::decide(&inputs, Contact::Pxe);
    let mac = m.mac.to_string();
    let mode = m.boot_mode.as_str();
    let boot = &st.cfg.boot;
    match d.offer {
        Offer::Local(why) => (
            st.templates.local(
                &mac,
                mode,
                m.sanboot_drive.as_deref().unwrap_or("0x80"),
                why.text(),
            ),
            format!("Local disk boot: {}.", why.text()),
        ),
        Offer::Flash(choice) => {
            let (sc, note) = match (choice, current) {
                (CycleChoice::Reuse(id), Some(c)) if c.id == id => (
                    ScriptCycle {
                        id,
                        attempt: c.attempt,
                        image_name: c.image_name.clone(),
                        target_serial: c.target_serial.clone(),
                    },
                    format!("Flash chain of the open cycle {id}."),
                ),
                _ => {
                    let attempt = match choice {
                        CycleChoice::New { attempt } => attempt,
                        CycleChoice::Reuse(_) => 1,
                    };
                    (
                        ScriptCycle {
                            id: 0,
                            attempt,
                            image_name: m.image.clone().unwrap_or_default(),
                            target_serial: m.target_disk_serial.clone().unwrap_or_default(),
                        },
                        format!(
                            "Flash chain. The next PXE contact opens a new cycle (attempt {attempt}); \
                             its id is shown here as 0."
                        ),
                    )
                }
            };
            (
                st.templates.netboot(
                    &host,
                    &mac,
                    mode,
                    &boot.kernel,
                    &boot.initrd,
                    &boot.console,
                    Some(&sc),
                ),
                note,
            )
        }
        Offer::Inventory => (
            st.templates.netboot(
                &host,
                &mac,
                mode,
                &boot.kernel,
                &boot.initrd,
                &boot.console,
                None,
            ),
            "Netboot environment to report inventory.".into(),
        ),
        Offer::Park(_) => (
            st.templates.parked(
                &host,
                &mac,
                &m.mac.hyphenated(),
                m.parked_reason.as_deref().unwrap_or("attempts exhausted"),
            ),
            "Parked: the machine waits and asks again until an operator changes it.".into(),
        ),
    }
}

/// `GET /ui/machines/{mac}/ipxe`: the preview as plain text.
pub async fn ipxe_preview(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(raw): Path<String>,
) -> Result<Response, UiError> {
    let mac = parse_path_mac(&raw)?;
    let loaded = st
        .db
        .call(move |c| -> rusqlite::Result<_> {
            let Some(m) = machines::get(c, mac)? else {
                return Ok(None);
            };
            let cur = cycles::current(c, mac, m.arm_gen)?;
            Ok(Some((m, cur)))
        })
        .await??;
    let Some((m, cur)) = loaded else {
        return Err(UiError::not_found(format!(
            "No machine {mac} is registered."
        )));
    };
    let (script, _) = preview(&st, &headers, &m, cur.as_ref());
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; charset=utf-8",
        )],
        script,
    )
        .into_response())
}

/// Render one list row (the live stream uses it).
pub fn row_html(row: &RowView) -> Result<String, UiError> {
    #[derive(Serialize)]
    struct Ctx<'a> {
        r: &'a RowView,
    }
    render("machine_row.html", &Ctx { r: row }, None).map(|s| s.trim().to_string())
}
