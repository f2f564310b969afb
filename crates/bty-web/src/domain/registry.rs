//! The machine registry: what an operator may set on a machine (checked
//! against the strict character sets and the catalog), creating, changing
//! and deleting machines, and reading them with their current cycle.
//!
//! The REST API and the UI both go through [`validate`] and
//! [`Domain::put_machine`], so they accept exactly the same machines. A
//! change of mode, image or target (or releasing a parked machine) re-arms
//! it: its open cycles are cancelled and the next contact starts afresh.

use crate::db::sql::{self, Conn, Lock};
use bty_proto::{text, BootMode, Mac};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::bus::BusMsg;
use super::journal::Journal;
use super::{Domain, DomainError, Result};
use crate::catalog::Catalog;
use crate::db::cycles::{self, Cycle};
use crate::db::machines::{self, Machine, Settings};

/// Labels per machine at most.
pub const MAX_LABELS: usize = 32;

/// A machine as an operator sets it (`PUT /api/machines/{mac}` body, the
/// UI's form after its own checks). A full replace: omitted fields become
/// empty (mode `ipxe-exit`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachinePut {
    /// Boot mode name.
    #[serde(default)]
    pub boot_mode: Option<String>,
    /// Catalog entry name.
    #[serde(default)]
    pub image: Option<String>,
    /// Target disk serial.
    #[serde(default)]
    pub target_disk_serial: Option<String>,
    /// BIOS drive (`0x80`).
    #[serde(default)]
    pub sanboot_drive: Option<String>,
    /// Labels.
    #[serde(default)]
    pub labels: Vec<String>,
    /// Name.
    #[serde(default)]
    pub name: Option<String>,
}

/// A machine with its current cycle.
#[derive(Debug, Serialize)]
pub struct MachineView {
    /// The stored machine.
    #[serde(flatten)]
    pub machine: Machine,
    /// Its current cycle (newest of the current arming), if any.
    pub cycle: Option<Cycle>,
}

fn none_if_empty(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.is_empty())
}

/// Check a machine's settings against the strict character sets and the
/// catalog; the first problem is the error.
pub fn validate(put: MachinePut, catalog: &Catalog) -> Result<Settings> {
    let boot_mode = boot_mode(none_if_empty(put.boot_mode))?;
    let name = checked(put.name, |n| text::validate_name("name", n))?;
    let image = none_if_empty(put.image);
    let target = checked(put.target_disk_serial, text::validate_serial)?;
    let drive = checked(put.sanboot_drive, text::validate_sanboot_drive)?;
    let labels = labels(put.labels)?;
    if let Some(i) = &image {
        check_image(i, catalog)?;
    }
    if boot_mode.flashes() && (image.is_none() || target.is_none()) {
        return Err(DomainError::invalid(
            "boot_mode",
            format!("boot_mode {boot_mode} needs both image and target_disk_serial"),
        ));
    }
    Ok(Settings {
        name,
        boot_mode,
        image,
        target_disk_serial: target,
        sanboot_drive: drive,
        labels,
    })
}

/// An optional text field: empty is none, anything else must pass `rule`.
fn checked(
    v: Option<String>,
    rule: impl Fn(&str) -> std::result::Result<(), text::TextError>,
) -> Result<Option<String>> {
    let v = none_if_empty(v);
    if let Some(s) = &v {
        rule(s)?;
    }
    Ok(v)
}

/// A mode name; none means `ipxe-exit`.
fn boot_mode(raw: Option<String>) -> Result<BootMode> {
    match raw {
        None => Ok(BootMode::IpxeExit),
        Some(s) => s
            .parse::<BootMode>()
            .map_err(|e| DomainError::invalid("boot_mode", e.to_string())),
    }
}

/// At most [`MAX_LABELS`] valid labels, duplicates (in any case) dropped.
fn labels(raw: Vec<String>) -> Result<Vec<String>> {
    if raw.len() > MAX_LABELS {
        return Err(DomainError::invalid(
            "labels",
            format!("labels: at most {MAX_LABELS} labels"),
        ));
    }
    let mut labels: Vec<String> = Vec::new();
    for l in raw {
        text::validate_label(&l)?;
        if !labels.iter().any(|x| x.eq_ignore_ascii_case(&l)) {
            labels.push(l);
        }
    }
    Ok(labels)
}

/// A valid name of an image the catalog has now.
fn check_image(name: &str, catalog: &Catalog) -> Result<()> {
    text::validate_image_name(name)?;
    let snap = catalog.snapshot();
    if snap.get(name).is_none() {
        return Err(DomainError::invalid(
            "image",
            format!(
                "image {name:?} is not in the catalog; {}",
                snap.describe_sources(catalog.file(), catalog.withcache_url())
            ),
        ));
    }
    Ok(())
}

/// `m` with its current cycle (none unless its mode flashes).
pub fn view(conn: &Conn, m: Machine) -> sql::Result<MachineView> {
    let cycle = if m.boot_mode.flashes() {
        cycles::current(conn, m.mac, m.arm_gen)?
    } else {
        None
    };
    Ok(MachineView { machine: m, cycle })
}

/// The machine with `mac`, or [`DomainError::NotFound`].
pub fn get(conn: &Conn, mac: Mac) -> Result<Machine> {
    machines::get(conn, mac)?.ok_or_else(|| not_registered(mac))
}

/// [`DomainError::NotFound`] for a MAC no machine has.
pub fn not_registered(mac: Mac) -> DomainError {
    DomainError::NotFound(format!("no machine {mac} is registered"))
}

/// What [`put`] did.
#[derive(Debug)]
pub struct Put {
    /// The machine as stored now.
    pub machine: Machine,
    /// It did not exist before.
    pub created: bool,
}

/// Create or fully replace a machine's settings, re-arming it when its
/// mode, image or target changed or it was parked.
pub fn put(conn: &mut Conn, mac: Mac, s: &Settings) -> Result<(Put, Vec<BusMsg>)> {
    let mac_s = mac.to_string();
    let tx = conn.transaction(Lock::Machine(&mac_s))?;
    let mut j = Journal::start();
    let old = machines::get(&tx, mac)?;
    let p = put_in(&tx, &mut j, mac, s, old.as_ref())?;
    tx.commit()?;
    Ok((p, j.bus))
}

/// [`put`]'s work inside a transaction the caller holds (one machine's
/// lock, or the global one for a bulk import); `old` is the machine as
/// that transaction read it.
pub(super) fn put_in(
    tx: &Conn,
    j: &mut Journal,
    mac: Mac,
    s: &Settings,
    old: Option<&Machine>,
) -> Result<Put> {
    let (arm_gen, rearm, unpark) = arming(old, s);
    if rearm {
        cancel_open_cycles(tx, j, mac)?;
    }
    machines::upsert(tx, mac, s, arm_gen, &j.now)?;
    if unpark {
        machines::set_parked(tx, mac, None, &j.now)?;
        j.event(
            tx,
            "machine.unparked",
            mac,
            format!("{mac} released from parking by an operator change"),
            json!({}),
        )?;
    }
    let created = old.is_none();
    log_put(tx, j, mac, s, created, rearm)?;
    let machine = machines::get(tx, mac)?.ok_or_else(|| {
        DomainError::Internal(format!("machine {mac} vanished inside its own transaction"))
    })?;
    j.push(BusMsg::machine(&machine, None));
    Ok(Put { machine, created })
}

/// The new arming generation, and whether the change re-arms and
/// un-parks the machine.
fn arming(old: Option<&Machine>, s: &Settings) -> (i64, bool, bool) {
    let Some(m) = old else {
        return (0, false, false);
    };
    let policy = m.boot_mode != s.boot_mode
        || m.image != s.image
        || m.target_disk_serial != s.target_disk_serial;
    let unpark = m.parked_reason.is_some();
    let bump = policy || unpark;
    (m.arm_gen + i64::from(bump), bump, unpark)
}

fn cancel_open_cycles(conn: &Conn, j: &mut Journal, mac: Mac) -> sql::Result<()> {
    let n = cycles::cancel_open(conn, mac, "replaced by an operator change", &j.now)?;
    if n > 0 {
        j.event(
            conn,
            "cycle.cancelled",
            mac,
            format!("{mac}: {n} unfinished flash cycle(s) cancelled by an operator change"),
            json!({"count": n}),
        )?;
    }
    Ok(())
}

fn log_put(
    conn: &Conn,
    j: &mut Journal,
    mac: Mac,
    s: &Settings,
    created: bool,
    rearmed: bool,
) -> sql::Result<()> {
    let details = json!({"boot_mode": s.boot_mode.as_str(), "image": s.image,
        "target_disk_serial": s.target_disk_serial, "sanboot_drive": s.sanboot_drive,
        "labels": s.labels, "name": s.name, "rearmed": rearmed});
    let (kind, verb) = if created {
        ("machine.created", "created")
    } else {
        ("machine.updated", "updated")
    };
    let image = s
        .image
        .as_deref()
        .map(|i| format!(", image {i}"))
        .unwrap_or_default();
    let summary = format!("{mac} {verb}: boot_mode {}{image}", s.boot_mode);
    j.event(conn, kind, mac, summary, details)
}

/// Delete a machine and its cycle history; its events are kept.
pub fn delete(conn: &mut Conn, mac: Mac) -> Result<Vec<BusMsg>> {
    let mac_s = mac.to_string();
    let tx = conn.transaction(Lock::Machine(&mac_s))?;
    if !machines::delete(&tx, mac)? {
        return Err(not_registered(mac));
    }
    let mut j = Journal::start();
    j.event(
        &tx,
        "machine.deleted",
        mac,
        format!("{mac} deleted (its events are kept)"),
        json!({}),
    )?;
    tx.commit()?;
    j.push(BusMsg::deleted(&mac.to_string()));
    Ok(j.bus)
}

impl Domain {
    /// Check a machine's settings ([`validate`] against this catalog).
    pub fn validate(&self, put: MachinePut) -> Result<Settings> {
        validate(put, &self.catalog)
    }

    /// Every machine with its current cycle, ordered by MAC.
    pub async fn machines(&self) -> Result<Vec<MachineView>> {
        self.read(|c| {
            let all = machines::list(c)?;
            Ok(all
                .into_iter()
                .map(|m| view(c, m))
                .collect::<Result<_, _>>()?)
        })
        .await
    }

    /// One machine with its current cycle.
    pub async fn machine(&self, mac: Mac) -> Result<MachineView> {
        self.read(move |c| Ok(view(c, get(c, mac)?)?)).await
    }

    /// A machine's flash cycles, newest first.
    pub async fn cycles(&self, mac: Mac, limit: u32) -> Result<Vec<Cycle>> {
        self.read(move |c| Ok(cycles::history(c, mac, limit)?))
            .await
    }

    /// Create or replace a machine ([`put`]); returns it with its current
    /// cycle and whether it was created.
    pub async fn put_machine(&self, mac: Mac, s: Settings) -> Result<(MachineView, bool)> {
        self.write(move |c| {
            let (p, bus) = put(c, mac, &s)?;
            Ok(((view(c, p.machine)?, p.created), bus))
        })
        .await
    }

    /// Delete a machine ([`delete`]).
    pub async fn delete_machine(&self, mac: Mac) -> Result<()> {
        self.write(move |c| Ok(((), delete(c, mac)?))).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::test_support::{conn, mac, settings};

    async fn catalog(dir: &tempfile::TempDir) -> Catalog {
        let path = dir.path().join("catalog.toml");
        let toml = "version = 1\n[[images]]\nname = \"debian-12\"\n\
                    src = \"https://images.example/debian-12.img.zst\"\n";
        std::fs::write(&path, toml).unwrap();
        let c = Catalog::new(Some(path), None, None);
        c.refresh(true, false).await;
        c
    }

    fn put_of(pairs: &[(&str, &str)]) -> MachinePut {
        let v: serde_json::Map<String, serde_json::Value> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        serde_json::from_value(serde_json::Value::Object(v)).unwrap()
    }

    #[tokio::test]
    async fn validation_names_the_field_at_fault() {
        let dir = tempfile::tempdir().unwrap();
        let cat = catalog(&dir).await;
        let field = |pairs: &[(&str, &str)]| match validate(put_of(pairs), &cat) {
            Err(DomainError::Invalid { field, .. }) => field,
            other => panic!("{pairs:?}: {other:?}"),
        };
        assert_eq!(field(&[("boot_mode", "flash")]), "boot_mode");
        assert_eq!(field(&[("name", "a b")]), "name");
        assert_eq!(
            field(&[("target_disk_serial", "x;y")]),
            "target_disk_serial"
        );
        assert_eq!(field(&[("sanboot_drive", "80")]), "sanboot_drive");
        assert_eq!(field(&[("image", "centos")]), "image");
        assert_eq!(field(&[("boot_mode", "bty-flash-once")]), "boot_mode");
        let many = MachinePut {
            labels: (0..=MAX_LABELS).map(|i| format!("l{i}")).collect(),
            ..MachinePut::default()
        };
        let e = validate(many, &cat);
        assert!(matches!(
            e,
            Err(DomainError::Invalid {
                field: "labels",
                ..
            })
        ));
        let ok = MachinePut {
            labels: vec!["rack1".into(), "RACK1".into(), "gpu".into()],
            ..put_of(&[
                ("boot_mode", "bty-flash-once"),
                ("image", "debian-12"),
                ("target_disk_serial", "BTYTEST"),
            ])
        };
        let s = validate(ok, &cat).unwrap();
        assert_eq!(s.labels, ["rack1", "gpu"], "duplicates dropped in any case");
        let empty = validate(MachinePut::default(), &cat).unwrap();
        assert_eq!(empty.boot_mode, BootMode::IpxeExit);
    }

    #[test]
    fn a_policy_change_or_unparking_rearms() {
        let mut c = conn();
        let s = settings(BootMode::FlashOnce);
        let (p, bus) = put(&mut c, mac(), &s).unwrap();
        assert!(p.created && p.machine.arm_gen == 0);
        assert_eq!(
            bus.len(),
            2,
            "machine.created event and the machine message"
        );
        let m = &p.machine;
        assert_eq!(arming(Some(m), &s), (0, false, false));
        let renamed = Settings {
            name: Some("n".into()),
            ..s.clone()
        };
        assert_eq!(arming(Some(m), &renamed), (0, false, false));
        let other = Settings {
            target_disk_serial: Some("OTHER".into()),
            ..s.clone()
        };
        assert_eq!(arming(Some(m), &other), (1, true, false));
        let parked = Machine {
            parked_reason: Some("x".into()),
            ..m.clone()
        };
        assert_eq!(arming(Some(&parked), &s), (1, true, true));
        assert_eq!(arming(None, &s), (0, false, false));
    }

    #[test]
    fn put_cancels_open_cycles_and_delete_says_not_found() {
        let mut c = conn();
        put(&mut c, mac(), &settings(BootMode::FlashOnce)).unwrap();
        let snap = crate::domain::test_support::snapshot();
        let contact = crate::domain::decide::Contact::Pxe;
        super::super::cycle::contact::contact(&mut c, mac(), "ip", contact, 3, &snap).unwrap();
        let (p, bus) = put(&mut c, mac(), &settings(BootMode::FlashAlways)).unwrap();
        assert!(!p.created && p.machine.arm_gen == 1);
        let kinds: Vec<&str> = bus
            .iter()
            .filter_map(|m| match m {
                BusMsg::Event(e) => Some(e.kind.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(kinds, ["cycle.cancelled", "machine.updated"]);
        assert_eq!(delete(&mut c, mac()).unwrap().len(), 2);
        assert!(matches!(
            delete(&mut c, mac()),
            Err(DomainError::NotFound(_))
        ));
    }
}
