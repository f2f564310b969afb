//! The Settings page (`/ui/settings`): what this instance runs with, read
//! only (the values come from the command line and `WITHCACHE_*`).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::Response;
use bty_http::Layout;
use http::StatusCode;
use serde::Serialize;

use super::page;
use crate::app::App;

#[derive(Serialize)]
struct SettingsView {
    data_dir: String,
    max: Option<u64>,
    used: u64,
    reserved: u64,
    quota_free: Option<u64>,
    fs_free: Option<u64>,
    fs_total: Option<u64>,
    entries: usize,
    max_downloads: usize,
    max_attempts: u32,
    retry_base: String,
    read_timeout: String,
    connect_timeout: String,
    sendfile: bool,
    private_origins: bool,
    admin: String,
    auth: &'static str,
}

/// Free and total bytes of the file system holding `path`. `statvfs(3)`
/// through libc (already a dependency for sendfile) rather than a crate
/// for one call.
fn fs_space(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a NUL-terminated path and `st` points to writable
    // memory of the right type; statvfs fills it completely on success.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: rc == 0, so statvfs initialised `st`.
    let st = unsafe { st.assume_init() };
    // The field types are narrower than u64 on 32-bit targets.
    #[allow(clippy::unnecessary_cast)]
    let (unit, avail, blocks) = (st.f_frsize as u64, st.f_bavail as u64, st.f_blocks as u64);
    Some((avail * unit, blocks * unit))
}

fn secs(d: Duration) -> String {
    bty_ui_kit::human_duration(d.as_secs_f64())
}

pub(super) async fn show(State(app): State<Arc<App>>) -> Response {
    let (used, reserved, max) = app.store.usage();
    let creds = app.auth.credentials();
    let auth = if creds.is_open() {
        "open: no password set (set WITHCACHE_ADMIN_PASSWORD_HASH)"
    } else if creds.uses_default_password() {
        "password set, but it is the well-known default: change it"
    } else {
        "password set"
    };
    let fs = fs_space(&app.opts.data_dir);
    let f = &app.opts.fetch;
    let s = SettingsView {
        data_dir: app.opts.data_dir.display().to_string(),
        max,
        used,
        reserved,
        quota_free: max.map(|m| m.saturating_sub(used + reserved)),
        fs_free: fs.map(|x| x.0),
        fs_total: fs.map(|x| x.1),
        entries: app.db().entries().map(|e| e.len()).unwrap_or(0),
        max_downloads: f.max_downloads,
        max_attempts: f.max_attempts,
        retry_base: secs(f.retry_base_delay),
        read_timeout: secs(f.read_timeout),
        connect_timeout: secs(f.connect_timeout),
        sendfile: app.opts.sendfile,
        private_origins: app.opts.allow_private_origins,
        admin: creds.user().to_string(),
        auth,
    };
    page(
        StatusCode::OK,
        "settings.html",
        &minijinja::context! { layout => Layout::new(&app, "Settings", "settings"), s },
    )
}
