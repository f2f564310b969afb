//! What the agent reports about the machine besides its flash: the netboot
//! files being fetched (a cycle is `booted`) and the hardware inventory.

use crate::db::sql::{Conn, Lock};
use bty_proto::inventory::{Firmware, FirmwareKind, Inventory, SecureBoot};
use bty_proto::{BootMode, Mac};
use serde_json::json;

use super::current_cycle;
use crate::db::cycles::{self, CycleState};
use crate::db::machines;
use crate::domain::bus::BusMsg;
use crate::domain::journal::Journal;
use crate::domain::{DomainError, Result};

/// Most disks (and most NICs) an inventory may list.
pub const MAX_DEVICES: usize = 256;

/// Most bytes of inventory JSON stored per machine. A larger body keeps
/// only what bty-proto's [`Inventory`] names (the other keys are dropped);
/// if even that is larger, it is refused.
pub const MAX_STORED: usize = 256 * 1024;

/// `GET /boot/{name}?mac=`: the file was found and is being served. Moves
/// an `offered` cycle to `booted` when the client is the one the cycle
/// was offered to (another host polling `/boot/...?mac=` for this MAC
/// cannot make the cycle, its plan and its token its own); an unknown MAC
/// changes nothing.
pub fn booted(conn: &mut Conn, mac: Mac, ip: &str, file: &str) -> Result<Vec<BusMsg>> {
    let mac_s = mac.to_string();
    let tx = conn.transaction(Lock::Machine(&mac_s))?;
    let mut j = Journal::start();
    let Some(m) = machines::get(&tx, mac)? else {
        return Ok(j.bus);
    };
    machines::touch(&tx, mac, ip, &j.now)?;
    let offered_here = |c: &cycles::Cycle| c.offered_ip.as_deref().is_none_or(|o| o == ip);
    if let Some(mut c) =
        current_cycle(&tx, &m)?.filter(|c| c.state == CycleState::Offered && offered_here(c))
    {
        cycles::mark_booted(&tx, c.id, ip, &j.now)?;
        c.state = CycleState::Booted;
        j.event(
            &tx,
            "cycle.booted",
            mac,
            format!("{mac}: cycle {} booted the netboot env ({file})", c.id),
            json!({"cycle": c.id, "file": file, "ip": ip}),
        )?;
        j.push(BusMsg::machine(&m, Some(&c)));
    }
    tx.commit()?;
    Ok(j.bus)
}

/// A posted inventory, checked: the JSON text to store and a one-line
/// summary.
#[derive(Debug, PartialEq, Eq)]
pub struct CheckedInventory {
    /// The body as posted (unknown fields kept).
    pub json: String,
    /// `2 disk(s), 1 NIC(s)`.
    pub summary: String,
}

/// Check a posted inventory: a JSON object that reads as an
/// [`Inventory`] of at most [`MAX_DEVICES`] disks and NICs.
pub fn check(body: &serde_json::Value) -> Result<CheckedInventory> {
    if !body.is_object() {
        return Err(DomainError::invalid(
            "inventory",
            "inventory must be a JSON object",
        ));
    }
    let inv: Inventory = serde_json::from_value(body.clone())
        .map_err(|e| DomainError::invalid("inventory", format!("bad inventory: {e}")))?;
    if inv.disks.len() > MAX_DEVICES || inv.nics.len() > MAX_DEVICES {
        return Err(DomainError::invalid(
            "inventory",
            format!("inventory lists more than {MAX_DEVICES} disks or NICs"),
        ));
    }
    let mut summary = format!("{} disk(s), {} NIC(s)", inv.disks.len(), inv.nics.len());
    if let Some(fw) = &inv.firmware {
        summary.push_str(", ");
        summary.push_str(&firmware_words(fw));
    }
    let mut json = body.to_string();
    if json.len() > MAX_STORED {
        json = serde_json::to_string(&inv)
            .map_err(|e| DomainError::Internal(format!("inventory: {e}")))?;
    }
    if json.len() > MAX_STORED {
        return Err(DomainError::invalid(
            "inventory",
            format!("inventory is larger than {MAX_STORED} bytes even without its extra keys"),
        ));
    }
    Ok(CheckedInventory { json, summary })
}

/// `UEFI, Secure Boot on` / `BIOS`: how the machine booted, in words (the
/// event summary and the machine page).
pub fn firmware_words(fw: &Firmware) -> String {
    let kind = match fw.kind {
        FirmwareKind::Uefi => "UEFI",
        FirmwareKind::Bios => "BIOS",
        FirmwareKind::Other => "other firmware",
    };
    match fw.secure_boot {
        None => kind.to_string(),
        Some(SecureBoot::Enabled) => format!("{kind}, Secure Boot on"),
        Some(SecureBoot::Disabled) => format!("{kind}, Secure Boot off"),
        Some(SecureBoot::Unknown | SecureBoot::Other) => format!("{kind}, Secure Boot unknown"),
    }
}

/// `POST /pxe/{mac}/inventory`: store it; in inventory mode the next PXE
/// contact then boots the disk. An unknown MAC is logged as an orphan
/// report and refused with [`DomainError::NotFound`].
pub fn inventory(
    conn: &mut Conn,
    mac: Mac,
    ip: &str,
    inv: &CheckedInventory,
) -> Result<Vec<BusMsg>> {
    let mac_s = mac.to_string();
    let tx = conn.transaction(Lock::Machine(&mac_s))?;
    let mut j = Journal::start();
    let Some(m) = machines::get(&tx, mac)? else {
        super::log_orphan(&tx, &mut j, mac, ip, "inventory")?;
        tx.commit()?;
        return Err(DomainError::NotFound(format!(
            "no machine {mac} is registered; it registers on its first PXE contact"
        )));
    };
    machines::set_inventory(&tx, mac, &inv.json, ip, &j.now)?;
    if m.boot_mode == BootMode::Inventory {
        machines::set_inventory_local_next(&tx, mac, true)?;
    }
    j.event(
        &tx,
        "machine.inventory",
        mac,
        format!("{mac} reported inventory: {}", inv.summary),
        json!({"ip": ip}),
    )?;
    tx.commit()?;
    Ok(j.bus)
}
