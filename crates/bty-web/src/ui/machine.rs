//! A machine's own page: its record, inventory, live cycle, history and
//! events, the iPXE script and the GRUB config (Secure Boot chain) it would
//! get now, the edit form and delete.
//!
//! The previews are the domain's [`crate::domain::cycle::preview`]
//! rendered by [`crate::ipxe::Templates::answer`] and
//! [`crate::ipxe::Templates::grub_answer`], the same two steps as
//! `GET /pxe/{mac}` and `GET /grub/grub.cfg-{mac}`, so they show what the
//! machine would really be served.

use crate::db::sql::{self, Conn, OptionalExtension};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use bty_proto::inventory::Inventory;
use bty_proto::{BootMode, Mac};
use serde::{Deserialize, Serialize};

use super::data::{self, EventQuery, EventView, ProgressView, RowView};
use super::is_htmx;
use super::machine_form::MachineForm;
use super::machine_form::{disk_options, inventory_of, validate, DiskOption, FieldErrors};
use super::machines::image_names;
use super::render::{page_or_partial, Layout, UiError};
use crate::db::cycles::{self, Cycle};
use crate::db::machines::{self, Machine};
use crate::domain::cycle::{AnswerKind, Preview};
use crate::domain::DomainError;
use crate::state::AppState;

/// Everything the detail page shows about the current state; also the
/// `status` fragment the live stream swaps.
#[derive(Debug, Serialize)]
pub struct StatusView {
    /// Machine.
    pub mac: String,
    /// Its row (state word, labels).
    pub row: Option<RowView>,
    /// The current (PXE) cycle.
    pub cycle: Option<Cycle>,
    /// An open USB-stick flash (it runs beside the PXE cycles).
    pub stick: Option<Cycle>,
    /// The progress of the open stick flash, else of the current cycle
    /// when open: one progress bar, the one the live stream updates.
    pub progress: Option<ProgressView>,
    /// Latest successful flash.
    pub last_flash: Option<Cycle>,
}

/// Load the status fragment's data.
pub fn status_view(conn: &Conn, m: &Machine) -> sql::Result<StatusView> {
    let mac = m.mac.to_string();
    let cycle = cycles::current(conn, m.mac, m.arm_gen)?;
    let stick = cycles::open_stick(conn, m.mac)?;
    let open = cycle.as_ref().filter(|c| c.state.is_open());
    let progress = stick.as_ref().or(open).map(|c| {
        ProgressView::new(
            c.id,
            c.state.as_str(),
            c.phase.as_deref(),
            c.bytes_done,
            c.bytes_total,
            c.rate,
        )
    });
    Ok(StatusView {
        row: data::row_of(conn, &mac)?,
        last_flash: last_flash(conn, &mac)?,
        mac,
        cycle,
        stick,
        progress,
    })
}

/// The machine's latest cycle that ended `done`.
fn last_flash(conn: &Conn, mac: &str) -> sql::Result<Option<Cycle>> {
    let id: Option<i64> = conn
        .prepare_cached(
            "SELECT id FROM cycles WHERE mac = ?1 AND state = 'done' ORDER BY id DESC LIMIT 1",
        )?
        .query_row([mac], |r| r.get(0))
        .optional()?;
    match id {
        Some(id) => cycles::get(conn, id),
        None => Ok(None),
    }
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
    /// How it booted the netboot environment (`UEFI, Secure Boot on`).
    firmware: Option<String>,
    disks: Option<Vec<DiskOption>>,
    ipxe: String,
    ipxe_note: String,
    /// The GRUB config a Secure Boot machine would get now.
    grub: String,
    form: MachineForm,
    errors: FieldErrors,
    images: Vec<String>,
    modes: Vec<&'static str>,
    action: String,
    saved: Option<String>,
    /// The `[[sites]]` site of the address it was last seen at: the
    /// withcache its next flash downloads from.
    site: Option<SiteView>,
}

#[derive(Serialize)]
struct SiteView {
    name: String,
    withcache: String,
}

/// The site `ip` falls in, for the page.
fn site_of(st: &AppState, ip: Option<&str>) -> Option<SiteView> {
    let ip: std::net::IpAddr = ip?.parse().ok()?;
    let snap = st.catalog.snapshot();
    let s = snap.sites.site_of(ip)?;
    Some(SiteView {
        name: s.name.to_string(),
        withcache: s.withcache.to_string(),
    })
}

fn parse_path_mac(raw: &str) -> Result<Mac, UiError> {
    raw.parse::<Mac>()
        .map_err(|e| UiError::bad_request(format!("{raw:?} is not a MAC address: {e}")))
}

/// What the page shows besides the machine: the form as typed with its
/// problems (after a refused edit), or a "saved" notice.
struct Shown {
    form: Option<MachineForm>,
    errors: FieldErrors,
    saved: Option<String>,
    status: StatusCode,
}

impl Shown {
    /// The form as typed with its problems (422).
    fn refused(form: MachineForm, errors: FieldErrors) -> Shown {
        Shown {
            form: Some(form),
            errors,
            saved: None,
            status: StatusCode::UNPROCESSABLE_ENTITY,
        }
    }
}

/// The machine, its status, its last 50 cycles and its last 20 events.
type Loaded = (Machine, StatusView, Vec<Cycle>, Vec<EventView>);

fn load(conn: &Conn, mac: Mac) -> sql::Result<Option<Loaded>> {
    let Some(m) = machines::get(conn, mac)? else {
        return Ok(None);
    };
    let status = status_view(conn, &m)?;
    let history = cycles::history(conn, mac, 50)?;
    let q = EventQuery {
        mac: Some(mac.to_string()),
        limit: 20,
        ..Default::default()
    };
    let events = data::events(conn, &q)?;
    Ok(Some((m, status, history, events)))
}

async fn detail_page(
    st: &AppState,
    headers: &HeaderMap,
    mac: Mac,
    shown: Shown,
) -> Result<Response, UiError> {
    let Some(loaded) = st.db.call(move |c| load(c, mac)).await?? else {
        return Err(UiError::not_found(format!(
            "No machine {mac} is registered. It may have been deleted; see Machines."
        )));
    };
    let status = shown.status;
    let view = detail_view(st, headers, loaded, shown)?;
    let mut r = page_or_partial(is_htmx(headers), "machine.html", &view, None)?;
    *r.status_mut() = status;
    Ok(r)
}

fn detail_view(
    st: &AppState,
    headers: &HeaderMap,
    (m, status, history, events): Loaded,
    shown: Shown,
) -> Result<DetailView, UiError> {
    let p = st.domain.preview_of(&m, status.cycle.as_ref())?;
    let inventory = inventory_of(&m);
    let title = m.name.clone().unwrap_or_else(|| m.mac.to_string());
    Ok(DetailView {
        layout: Layout::new(st, title, "machines"),
        key: m.mac.to_string().replace(':', ""),
        form: shown.form.unwrap_or_else(|| MachineForm::from_machine(&m)),
        disks: disk_options(inventory.as_ref()),
        firmware: inventory
            .as_ref()
            .and_then(|i| i.firmware.as_ref())
            .map(crate::domain::cycle::inventory::firmware_words),
        inventory,
        status,
        history,
        events,
        ipxe: script(st, headers, &p, Script::Ipxe),
        grub: script(st, headers, &p, Script::Grub),
        ipxe_note: note(&p),
        errors: shown.errors,
        images: image_names(st),
        modes: BootMode::ALL.iter().map(|m| m.as_str()).collect(),
        action: format!("/ui/machines/{}", m.mac.hyphenated()),
        saved: shown.saved,
        site: site_of(st, m.last_seen_ip.as_deref()),
        machine: m,
    })
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
    let shown = Shown {
        form: None,
        errors: FieldErrors::new(),
        saved,
        status: StatusCode::OK,
    };
    detail_page(&st, &headers, mac, shown).await
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
            st.domain.put_machine(mac, settings).await?;
            let to = format!("/ui/machines/{}?saved=updated", mac.hyphenated());
            Ok(Redirect::to(&to).into_response())
        }
        Err(errors) => detail_page(&st, &headers, mac, Shown::refused(f, errors)).await,
    }
}

/// `POST /ui/machines/{mac}/delete`.
pub async fn delete(
    State(st): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Response, UiError> {
    let mac = parse_path_mac(&raw)?;
    match st.domain.delete_machine(mac).await {
        Ok(()) => {
            let to = format!("/ui/machines?done=deleted&what={}", mac.hyphenated());
            Ok(Redirect::to(&to).into_response())
        }
        Err(DomainError::NotFound(_)) => Err(UiError::not_found(format!(
            "No machine {mac} is registered; nothing was deleted."
        ))),
        Err(e) => Err(e.into()),
    }
}

/// The preview's script, for the host this page was reached at.
/// Which of the two boot chains a preview renders.
#[derive(Clone, Copy)]
enum Script {
    /// iPXE (BIOS, UEFI with Secure Boot off).
    Ipxe,
    /// shim + GRUB (UEFI, Secure Boot on or off).
    Grub,
}

fn script(st: &AppState, headers: &HeaderMap, p: &Preview, which: Script) -> String {
    let host = crate::routes::host(headers).unwrap_or_else(|_| st.cfg.server.listen.clone());
    match which {
        Script::Ipxe => st.templates.answer(&host, &st.cfg.boot, &p.answer),
        Script::Grub => st.templates.grub_answer(&host, &st.cfg.boot, &p.answer),
    }
}

/// One line on what the preview shows.
fn note(p: &Preview) -> String {
    match &p.answer.kind {
        AnswerKind::Local { why, .. } => format!("Local disk boot: {why}."),
        AnswerKind::Flash(c) if p.new_cycle => format!(
            "Flash chain. The next PXE contact opens a new cycle (attempt {}); \
             its id is shown here as 0.",
            c.attempt
        ),
        AnswerKind::Flash(c) => format!("Flash chain of the open cycle {}.", c.id),
        AnswerKind::Inventory => "Netboot environment to report inventory.".into(),
        AnswerKind::Parked { .. } => {
            "Parked: the machine waits and asks again until an operator changes it.".into()
        }
    }
}

/// `GET /ui/machines/{mac}/ipxe`: the iPXE preview as plain text.
pub async fn ipxe_preview(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(raw): Path<String>,
) -> Result<Response, UiError> {
    preview_text(&st, &headers, &raw, Script::Ipxe).await
}

/// `GET /ui/machines/{mac}/grub`: the GRUB config preview as plain text.
pub async fn grub_preview(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(raw): Path<String>,
) -> Result<Response, UiError> {
    preview_text(&st, &headers, &raw, Script::Grub).await
}

async fn preview_text(
    st: &AppState,
    headers: &HeaderMap,
    raw: &str,
    which: Script,
) -> Result<Response, UiError> {
    let mac = parse_path_mac(raw)?;
    let p = match st.domain.preview(mac).await {
        Err(DomainError::NotFound(_)) => {
            return Err(UiError::not_found(format!(
                "No machine {mac} is registered."
            )))
        }
        p => p?,
    };
    let script = script(st, headers, &p, which);
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        script,
    )
        .into_response())
}
