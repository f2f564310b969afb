//! The register / edit form of a machine: its fields as typed, the disks
//! the target select offers, and the checks that show every problem at
//! once next to its field.
//!
//! The form's own checks come first (UI wording, the machine's reported
//! disks); the domain's validator ([`crate::domain::registry::validate`],
//! the REST API's) is the final word, so the UI and the API accept exactly
//! the same machines.

use std::collections::BTreeMap;

use bty_proto::inventory::Inventory;
use bty_proto::{text, BootMode};
use serde::{Deserialize, Serialize};

use super::render::human_bytes;
use crate::db::machines::{Machine, Settings};
use crate::domain::registry::{MachinePut, MAX_LABELS};
use crate::domain::DomainError;
use crate::state::AppState;

/// Problems by field (`form` for one that belongs to no field).
pub type FieldErrors = BTreeMap<&'static str, String>;

/// The form's fields, as typed.
#[derive(Debug, Default, Deserialize, Serialize, Clone)]
pub struct MachineForm {
    #[serde(default)]
    pub mac: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub image: String,
    #[serde(default)]
    pub boot_mode: String,
    #[serde(default)]
    pub target_disk_serial: String,
    #[serde(default)]
    pub sanboot_drive: String,
    #[serde(default)]
    pub labels: String,
}

impl MachineForm {
    /// The form filled in with `m`'s settings.
    pub fn from_machine(m: &Machine) -> MachineForm {
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

    /// The fields as the domain's validator takes them.
    fn to_put(&self) -> MachinePut {
        MachinePut {
            boot_mode: Some(self.boot_mode.clone()),
            image: Some(self.image.trim().to_string()),
            target_disk_serial: Some(self.target_disk_serial.trim().to_string()),
            sanboot_drive: Some(self.sanboot_drive.trim().to_string()),
            labels: self.labels(),
            name: Some(self.name.trim().to_string()),
        }
    }
}

/// A disk the target select offers.
#[derive(Debug, Clone, Serialize)]
pub struct DiskOption {
    serial: Option<String>,
    text: String,
}

/// The reported disks (`None` before the first inventory).
pub fn disk_options(inv: Option<&Inventory>) -> Option<Vec<DiskOption>> {
    let options = inv?.disks.iter().map(|d| {
        let size = d.size_bytes.map(|b| format!(", {}", human_bytes(b)));
        let model = d.model.as_deref().map(|m| format!(", {m}"));
        let serial = d.serial.as_deref();
        DiskOption {
            serial: serial
                .filter(|s| text::validate_serial(s).is_ok())
                .map(str::to_string),
            text: format!(
                "{} {}{}{}",
                serial.unwrap_or("(no serial: cannot be a target)"),
                d.name,
                size.unwrap_or_default(),
                model.unwrap_or_default(),
            ),
        }
    });
    Some(options.collect())
}

/// The inventory `m` reported, when it reads as one.
pub fn inventory_of(m: &Machine) -> Option<Inventory> {
    m.inventory
        .clone()
        .and_then(|v| serde_json::from_value(v).ok())
}

/// Check every field on its own (so all problems show at once), then the
/// domain's validator as the final word.
pub fn validate(
    st: &AppState,
    f: &MachineForm,
    inventory: Option<&Inventory>,
) -> Result<Settings, FieldErrors> {
    let errors = field_errors(st, f, inventory);
    if !errors.is_empty() {
        return Err(errors);
    }
    st.domain
        .validate(f.to_put())
        .map_err(|e| FieldErrors::from([(field_of(&e), e.to_string())]))
}

/// Every field's problem, in the form's words.
fn field_errors(st: &AppState, f: &MachineForm, inventory: Option<&Inventory>) -> FieldErrors {
    let mut errors = FieldErrors::new();
    let mode = check_mode(f, &mut errors);
    let name = f.name.trim();
    check_text(
        name,
        "name",
        |n| text::validate_name("name", n),
        &mut errors,
    );
    check_image(st, f.image.trim(), &mut errors);
    check_serial(f.target_disk_serial.trim(), inventory, &mut errors);
    let drive = f.sanboot_drive.trim();
    check_text(
        drive,
        "sanboot_drive",
        text::validate_sanboot_drive,
        &mut errors,
    );
    check_labels(&f.labels(), &mut errors);
    if let Some(m) = mode.filter(|m| m.flashes()) {
        check_flash_binding(m, f, inventory.is_some(), &mut errors);
    }
    errors
}

/// The form field a domain error is about (`form` when none).
fn field_of(e: &DomainError) -> &'static str {
    // The form has a field for every column of a machines file but the MAC
    // (it is in the URL).
    let on_form = |f: &str| f != "mac" && crate::domain::bulk::COLUMNS.contains(&f);
    match e {
        DomainError::Invalid { field, .. } if on_form(field) => field,
        _ => "form",
    }
}

fn check_mode(f: &MachineForm, errors: &mut FieldErrors) -> Option<BootMode> {
    if f.boot_mode.is_empty() {
        return Some(BootMode::IpxeExit);
    }
    f.boot_mode
        .parse::<BootMode>()
        .map_err(|e| errors.insert("boot_mode", e.to_string()))
        .ok()
}

/// A non-empty `value` must pass `rule`.
fn check_text<E: std::fmt::Display>(
    value: &str,
    field: &'static str,
    rule: impl Fn(&str) -> Result<(), E>,
    errors: &mut FieldErrors,
) {
    if !value.is_empty() {
        if let Err(e) = rule(value) {
            errors.insert(field, e.to_string());
        }
    }
}

fn check_image(st: &AppState, image: &str, errors: &mut FieldErrors) {
    if !image.is_empty() && st.catalog.snapshot().get(image).is_none() {
        errors.insert(
            "image",
            format!("image {image:?} is not in the catalog; pick one from the list (see Images)"),
        );
    }
}

/// A valid serial, and one of the reported disks when there is an
/// inventory.
fn check_serial(serial: &str, inventory: Option<&Inventory>, errors: &mut FieldErrors) {
    if serial.is_empty() {
        return;
    }
    if let Err(e) = text::validate_serial(serial) {
        errors.insert("target_disk_serial", e.to_string());
        return;
    }
    let Some(inv) = inventory else {
        return;
    };
    let known: Vec<&str> = inv
        .disks
        .iter()
        .filter_map(|d| d.serial.as_deref())
        .collect();
    if known.contains(&serial) {
        return;
    }
    let listed = if known.is_empty() {
        "none with a serial".to_string()
    } else {
        known.join(", ")
    };
    errors.insert(
        "target_disk_serial",
        format!("target_disk_serial: {serial:?} is not one of the disks this machine reported ({listed})"),
    );
}

fn check_labels(labels: &[String], errors: &mut FieldErrors) {
    if labels.len() > MAX_LABELS {
        errors.insert("labels", format!("labels: at most {MAX_LABELS} labels"));
    }
    for l in labels {
        if let Err(e) = text::validate_label(l) {
            errors.insert(
                "labels",
                format!("{e} (label {l:?}; separate labels with commas)"),
            );
            break;
        }
    }
}

/// A flash mode needs an image and a target (each reported once).
fn check_flash_binding(
    m: BootMode,
    f: &MachineForm,
    has_inventory: bool,
    errors: &mut FieldErrors,
) {
    if f.image.trim().is_empty() {
        errors
            .entry("image")
            .or_insert(format!("boot mode {m} flashes an image: pick one"));
    }
    if f.target_disk_serial.trim().is_empty() {
        let pick = if has_inventory {
            " (pick one of the reported disks)"
        } else {
            ""
        };
        errors.entry("target_disk_serial").or_insert(format!(
            "boot mode {m} writes a disk: give the target disk's serial{pick}"
        ));
    }
}
