//! USB sticks: the keys an admin mints for `bty-lab usb build --server`,
//! and what a stick holding one may do: read the catalog of measured
//! images and start a stick cycle on a registered machine.
//!
//! The PXE surface is open to the LAN, so these two endpoints are gated by
//! the key. bty-web stores only the key's sha256: a key is found by the
//! digest of what the request carries (an index lookup, no comparison of
//! secrets that could exit early), and a copy of the database opens
//! nothing. A stick cycle is history and live progress on the machine's
//! page: the PXE decision never reads it (`cycles::current` ignores it).

use crate::db::sql::{Conn, Lock};
use base64::Engine;
use bty_proto::plan::ReportUrls;
use bty_proto::stick::{FlashStart, FlashStarted, ImageSource, ServerCatalog, ServerImage};
use bty_proto::Mac;
use serde::Serialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::bus::BusMsg;
use super::journal::Journal;
use super::{Domain, DomainError, Result};
use crate::catalog::Snapshot;
use crate::db::cycles::{self, Cycle, Finish, NewStickCycle};
use crate::db::machines;
use crate::db::sticks::{self, Stick};

/// Longest stick label, in characters.
pub const MAX_LABEL: usize = 80;
/// Most MACs a flash start may name (a machine with more NICs sends its
/// first ones).
pub const MAX_MACS: usize = 16;

/// What to do about a missing or unknown key: the one fix there is.
const REBUILD: &str = "rebuild the stick with `bty-lab usb build --server URL` \
                       (it mints a new key with the admin password)";

/// A key just minted: the only time the key itself is shown.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Minted {
    /// Row id.
    pub id: i64,
    /// The label.
    pub label: String,
    /// The key (`btystick_` and 32 random bytes, base64url): goes into the
    /// stick's manifest; bty-web keeps only its sha256.
    pub key: String,
    /// When.
    pub created_at: String,
}

/// A new key and its sha256 (lowercase hex). 32 bytes of the OS's CSPRNG
/// (`rand`, as the cycle tokens), base64url without padding.
fn new_key() -> (String, String) {
    let raw: [u8; 32] = rand::random();
    let key = format!(
        "{}{}",
        bty_proto::stick::KEY_PREFIX,
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    );
    let digest = key_digest(&key);
    (key, digest)
}

/// The stored form of a key.
fn key_digest(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// A label is 1 to [`MAX_LABEL`] printable characters, not only spaces.
pub fn check_label(label: &str) -> Result<()> {
    let n = label.chars().count();
    if label.trim().is_empty() || n > MAX_LABEL {
        return Err(DomainError::invalid(
            "label",
            format!("label: must be 1 to {MAX_LABEL} characters, not only spaces (got {n})"),
        ));
    }
    if let Some(c) = label.chars().find(|c| c.is_control()) {
        return Err(DomainError::invalid(
            "label",
            format!("label: contains the control character {c:?}; use printable characters"),
        ));
    }
    Ok(())
}

/// The key's row when `key` opens the stick surface; why not otherwise.
fn authorize(conn: &Conn, key: Option<&str>) -> Result<Stick> {
    let key = key.filter(|k| !k.is_empty()).ok_or_else(|| {
        DomainError::Unauthorized(format!(
            "this request carries no stick key (Authorization: Bearer {}...); {REBUILD}",
            bty_proto::stick::KEY_PREFIX
        ))
    })?;
    let Some(s) = sticks::by_hash(conn, &key_digest(key))? else {
        return Err(DomainError::Unauthorized(format!(
            "this stick key is not known to this bty-web (minted by another server, or \
             its database was reset); {REBUILD}"
        )));
    };
    if let Some(when) = &s.revoked_at {
        return Err(DomainError::Unauthorized(format!(
            "this stick's key ({:?}) was revoked on {when}; {REBUILD}",
            s.label
        )));
    }
    Ok(s)
}

/// The catalog a stick may flash from: the measured images only, with the
/// URL a plan would carry for a machine at `ip` (withcache's blob URL when
/// it is configured, its site's withcache when `ip` is in a site).
pub fn catalog_of(snap: &Snapshot, ip: &str) -> ServerCatalog {
    let images = snap
        .images
        .values()
        .filter_map(|i| {
            Some(ServerImage {
                name: i.entry.name.clone(),
                url: i.url_at(&snap.sites, ip),
                format: i.resolved_format,
                sha256: i.entry.sha256.clone()?,
                size: i.entry.size?,
            })
        })
        .collect();
    ServerCatalog { images }
}

/// A flash start's image name: a catalog name, or a stick's (which
/// `bty-lab usb build` allows to start with `_` or `-`): 1 to 128 of
/// letters, digits and `. _ - +`. It is shown on pages and in events, never
/// put in a script.
fn check_image_name(name: &str) -> Result<()> {
    let ok = |c: char| c.is_ascii_alphanumeric() || "._-+".contains(c);
    if name.is_empty() || name.len() > 128 || !name.chars().all(ok) {
        return Err(DomainError::invalid(
            "image",
            "image: must be 1 to 128 letters, digits and . _ - +",
        ));
    }
    Ok(())
}

/// Every rule a [`FlashStart`] must keep (400 naming the field).
pub fn check_start(f: &FlashStart) -> Result<()> {
    if f.macs.is_empty() || f.macs.len() > MAX_MACS {
        return Err(DomainError::invalid(
            "macs",
            format!(
                "macs: must list 1 to {MAX_MACS} MACs (got {})",
                f.macs.len()
            ),
        ));
    }
    check_image_name(&f.image)?;
    bty_proto::text::validate_sha256("sha256", &f.sha256)?;
    // SQLite integers are i64; a size beyond is no real image.
    if f.size == 0 || i64::try_from(f.size).is_err() {
        return Err(DomainError::invalid(
            "size",
            format!("size: must be 1 to {} bytes", i64::MAX),
        ));
    }
    bty_proto::text::validate_serial(&f.target_serial).map_err(|e| {
        DomainError::invalid("target_serial", format!("target_serial: {}", e.problem))
    })?;
    Ok(())
}

fn source_word(s: ImageSource) -> &'static str {
    match s {
        ImageSource::Stick => "stick",
        ImageSource::Server => "server",
    }
}

/// The URL a stick cycle records: the server image's (as a plan would
/// carry it) or `stick:NAME` for a file on the stick (and for a server
/// image this catalog no longer lists). `ip` is the stick's address (its
/// site's withcache serves a server image).
fn image_url(f: &FlashStart, snap: &Snapshot, ip: &str) -> String {
    match (f.source, snap.get(&f.image)) {
        (ImageSource::Server, Some(i)) => i.url_at(&snap.sites, ip),
        (s, _) => format!("{}:{}", source_word(s), f.image),
    }
}

/// What [`start`] made.
struct Started {
    mac: Mac,
    cycle: Cycle,
}

/// `POST /stick/flash` for a stick with key `key_label`, from `ip`.
fn start(
    conn: &mut Conn,
    key_label: &str,
    ip: &str,
    f: &FlashStart,
    snap: &Snapshot,
) -> Result<(Started, Vec<BusMsg>)> {
    // Global: a stick flash picks one of several MACs and supersedes the
    // machine's open stick cycle; sticks are serialized with everything.
    let tx = conn.transaction(Lock::Global)?;
    let mut found = None;
    for mac in &f.macs {
        if let Some(m) = machines::get(&tx, *mac)? {
            found = Some(m);
            break;
        }
    }
    // Nothing is stored for a machine bty-web does not know: no discovery
    // from here (a stick on a stranger's machine leaves no trace).
    let Some(m) = found else {
        let list: Vec<String> = f.macs.iter().map(Mac::to_string).collect();
        return Err(DomainError::NotFound(format!(
            "none of {} is registered in this bty-web; the flash goes on without a report. \
             Register one of these MACs in bty-web to see stick flashes on its page",
            list.join(", ")
        )));
    };
    let mut j = Journal::start();
    let mac = m.mac;
    if let Some(old) = cycles::open_stick(&tx, mac)? {
        let reason = format!("superseded by a new stick flash from {ip}");
        let fin = Finish {
            ok: false,
            reason: Some(&reason),
            disk_sha256: None,
            duration_s: None,
        };
        cycles::finish(&tx, old.id, &fin, &j.now)?;
        j.event(
            &tx,
            "flash.failed",
            mac,
            format!("{mac}: stick flash cycle {} failed: {reason}", old.id),
            json!({"cycle": old.id, "ok": false, "reason": reason, "stick": true}),
        )?;
    }
    let url = image_url(f, snap, ip);
    let source = source_word(f.source);
    let new = NewStickCycle {
        mac,
        arm_gen: m.arm_gen,
        image_name: &f.image,
        image_url: &url,
        image_sha256: &f.sha256,
        image_size: f.size,
        image_format: f.format.as_str(),
        image_source: source,
        target_serial: &f.target_serial,
        ip,
    };
    let c = cycles::insert_stick(&tx, &new, &j.now)?;
    machines::touch(&tx, mac, ip, &j.now)?;
    j.event(
        &tx,
        "stick.flash.started",
        mac,
        format!(
            "{mac}: USB stick flash (cycle {}) started from {ip}: {} (from the {source}) onto disk {}",
            c.id, c.image_name, c.target_serial
        ),
        json!({"cycle": c.id, "ip": ip, "image": c.image_name, "url": c.image_url,
               "source": source, "target_serial": c.target_serial, "sha256": f.sha256,
               "size": f.size, "stick": key_label}),
    )?;
    j.push(BusMsg::machine(&m, Some(&c)));
    tx.commit()?;
    Ok((Started { mac, cycle: c }, j.bus))
}

impl Domain {
    /// Mint a stick key called `label`.
    pub async fn mint_stick(&self, label: String) -> Result<Minted> {
        check_label(&label)?;
        let (key, digest) = new_key();
        self.write(move |c| {
            // The key and its event together, serialized like every stick
            // change.
            let tx = c.transaction(Lock::Global)?;
            let mut j = Journal::start();
            let s = sticks::insert(&tx, &label, &digest, &j.now)?;
            j.note(
                &tx,
                "stick.minted",
                format!("stick key {} ({:?}) minted", s.id, s.label),
                json!({"id": s.id, "label": s.label}),
            )?;
            tx.commit()?;
            let m = Minted {
                id: s.id,
                label: s.label,
                key,
                created_at: s.created_at,
            };
            Ok((m, j.bus))
        })
        .await
    }

    /// Every stick key (never the keys themselves).
    pub async fn sticks(&self) -> Result<Vec<Stick>> {
        self.read(|c| Ok(sticks::list(c)?)).await
    }

    /// Revoke key `id`: it opens nothing from now on. Revoking a revoked
    /// key changes nothing.
    pub async fn revoke_stick(&self, id: i64) -> Result<()> {
        self.write(move |c| {
            let tx = c.transaction(Lock::Global)?;
            let s = sticks::get(&tx, id)?
                .ok_or_else(|| DomainError::NotFound(format!("no stick key {id}")))?;
            let mut j = Journal::start();
            if s.revoked_at.is_none() {
                sticks::revoke(&tx, id, &j.now)?;
                j.note(
                    &tx,
                    "stick.revoked",
                    format!("stick key {id} ({:?}) revoked", s.label),
                    json!({"id": id, "label": s.label}),
                )?;
            }
            tx.commit()?;
            Ok(((), j.bus))
        })
        .await
    }

    /// The key's row when `key` opens the stick surface (recording its use
    /// from `ip`); [`DomainError::Unauthorized`] saying what to do
    /// otherwise, having changed nothing.
    pub async fn stick_key(&self, key: Option<String>, ip: String) -> Result<Stick> {
        self.db
            .run(move |c| {
                let s = authorize(c, key.as_deref())?;
                sticks::touch(c, s.id, &ip, &crate::db::now())?;
                Ok(s)
            })
            .await
    }

    /// `GET /stick/catalog` from `ip` (the key already checked).
    pub fn stick_catalog(&self, ip: &str) -> ServerCatalog {
        catalog_of(&self.catalog.snapshot(), ip)
    }

    /// `POST /stick/flash` from `ip` with key `key` (already checked);
    /// `host` is the validated `Host` the report URLs use.
    pub async fn stick_flash(
        &self,
        key: &Stick,
        ip: String,
        host: &str,
        f: FlashStart,
    ) -> Result<FlashStarted> {
        check_start(&f)?;
        let snap = self.catalog.snapshot();
        let label = key.label.clone();
        let s = self
            .write(move |c| start(c, &label, &ip, &f, &snap))
            .await?;
        self.metrics
            .flashes_started
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let base = format!("http://{host}/pxe/{}", s.mac.hyphenated());
        Ok(FlashStarted {
            mac: s.mac,
            cycle: s.cycle.id.to_string(),
            token: s.cycle.token,
            report: ReportUrls {
                progress: format!("{base}/progress"),
                done: format!("{base}/done"),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_prefixed_random_and_stored_as_their_digest() {
        let (a, da) = new_key();
        let (b, _) = new_key();
        assert!(a.starts_with(bty_proto::stick::KEY_PREFIX), "{a}");
        // 32 bytes in base64url without padding: 43 characters.
        assert_eq!(a.len(), bty_proto::stick::KEY_PREFIX.len() + 43, "{a}");
        assert_ne!(a, b);
        assert_eq!(da, key_digest(&a));
        assert_eq!(da.len(), 64);
        assert!(!da.contains(&a[9..]));
    }

    #[test]
    fn labels_are_short_and_printable() {
        assert!(check_label("lab stick 1").is_ok());
        assert!(check_label(&"é".repeat(MAX_LABEL)).is_ok());
        for bad in ["", "   ", "a\nb", "tab\there"] {
            assert!(
                matches!(
                    check_label(bad),
                    Err(DomainError::Invalid { field: "label", .. })
                ),
                "{bad:?}"
            );
        }
        assert!(check_label(&"x".repeat(MAX_LABEL + 1)).is_err());
    }
}
