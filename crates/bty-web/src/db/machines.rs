//! The machine registry.

use crate::db::sql::{self, params, Conn, OptionalExtension, Row};
use bty_proto::{BootMode, Mac};
use serde::Serialize;

/// One registered machine, as stored.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Machine {
    /// Canonical `aa:bb:cc:dd:ee:ff`.
    pub mac: Mac,
    /// Operator's name for it.
    pub name: Option<String>,
    /// What its PXE contacts do.
    pub boot_mode: BootMode,
    /// Catalog entry name of the image it is bound to.
    pub image: Option<String>,
    /// Serial of the disk a flash writes.
    pub target_disk_serial: Option<String>,
    /// BIOS drive number for the local boot, `0x80` when unset.
    pub sanboot_drive: Option<String>,
    /// Operator labels, sorted.
    pub labels: Vec<String>,
    /// First PXE contact.
    pub discovered_at: Option<String>,
    /// Latest contact of any kind.
    pub last_seen_at: Option<String>,
    /// Address of the latest contact.
    pub last_seen_ip: Option<String>,
    /// Latest inventory the agent posted.
    pub inventory: Option<serde_json::Value>,
    /// When it was posted.
    pub inventory_at: Option<String>,
    /// Row creation.
    pub created_at: String,
    /// Latest change of the row.
    pub updated_at: String,
    /// Arming generation: bumped by every operator change of mode, image or
    /// target (and by un-parking); cycles of older generations are history.
    pub arm_gen: i64,
    /// Why the machine is parked (no flash, no local boot), when it is.
    pub parked_reason: Option<String>,
    /// When it was parked.
    pub parked_at: Option<String>,
    /// Inventory mode: the next PXE contact boots the disk.
    pub inventory_local_next: bool,
}

const COLUMNS: &str = "mac, name, boot_mode, image, target_disk_serial, sanboot_drive, \
    discovered_at, last_seen_at, last_seen_ip, inventory, inventory_at, created_at, updated_at, \
    arm_gen, parked_reason, parked_at, inventory_local_next";

fn from_row(r: &Row) -> sql::Result<Machine> {
    let text_err = |i: usize, e: String| sql::Error::conversion(i, e);
    let mac: String = r.get(0)?;
    let mode: String = r.get(2)?;
    let inventory: Option<String> = r.get(9)?;
    Ok(Machine {
        mac: mac
            .parse()
            .map_err(|e: bty_proto::MacError| text_err(0, e.to_string()))?,
        name: r.get(1)?,
        boot_mode: mode
            .parse()
            .map_err(|e: bty_proto::UnknownBootMode| text_err(2, e.to_string()))?,
        image: r.get(3)?,
        target_disk_serial: r.get(4)?,
        sanboot_drive: r.get(5)?,
        labels: Vec::new(),
        discovered_at: r.get(6)?,
        last_seen_at: r.get(7)?,
        last_seen_ip: r.get(8)?,
        inventory: inventory.and_then(|s| serde_json::from_str(&s).ok()),
        inventory_at: r.get(10)?,
        created_at: r.get(11)?,
        updated_at: r.get(12)?,
        arm_gen: r.get(13)?,
        parked_reason: r.get(14)?,
        parked_at: r.get(15)?,
        inventory_local_next: r.get(16)?,
    })
}

fn labels(conn: &Conn, mac: &str) -> sql::Result<Vec<String>> {
    let mut st =
        conn.prepare_cached("SELECT label FROM machine_labels WHERE mac = ?1 ORDER BY label")?;
    let rows = st.query_map([mac], |r| r.get(0))?;
    rows.collect()
}

/// The machine with `mac`, labels included.
pub fn get(conn: &Conn, mac: Mac) -> sql::Result<Option<Machine>> {
    let key = mac.to_string();
    let mut st = conn.prepare_cached(&format!("SELECT {COLUMNS} FROM machines WHERE mac = ?1"))?;
    let Some(mut m) = st.query_row([&key], from_row).optional()? else {
        return Ok(None);
    };
    m.labels = labels(conn, &key)?;
    Ok(Some(m))
}

/// The machine without its labels and inventory: what a boot decision
/// needs, cheap enough for the PXE and plan paths (an inventory can be
/// megabytes of JSON).
pub fn get_for_decision(conn: &Conn, mac: Mac) -> sql::Result<Option<Machine>> {
    let cols = COLUMNS.replace("inventory, inventory_at", "NULL, inventory_at");
    conn.prepare_cached(&format!("SELECT {cols} FROM machines WHERE mac = ?1"))?
        .query_row([mac.to_string()], from_row)
        .optional()
}

/// Every machine, ordered by MAC, without its inventory (a list never
/// loads the posted blobs; one machine's view does).
pub fn list(conn: &Conn) -> sql::Result<Vec<Machine>> {
    let cols = COLUMNS.replace("inventory, inventory_at", "NULL, inventory_at");
    let mut st = conn.prepare_cached(&format!("SELECT {cols} FROM machines ORDER BY mac"))?;
    let mut out: Vec<Machine> = st.query_map((), from_row)?.collect::<Result<_, _>>()?;
    let mut lst =
        conn.prepare_cached("SELECT mac, label FROM machine_labels ORDER BY mac, label")?;
    let mut all: std::collections::HashMap<String, Vec<String>> = Default::default();
    for row in lst.query_map((), |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))? {
        let (mac, label) = row?;
        all.entry(mac).or_default().push(label);
    }
    for m in &mut out {
        m.labels = all.remove(&m.mac.to_string()).unwrap_or_default();
    }
    Ok(out)
}

/// Register an unknown MAC seen on a PXE contact (`bty-inventory` mode);
/// returns it as stored (without labels, which it has none of).
pub fn insert_discovered(conn: &Conn, mac: Mac, ip: &str, now: &str) -> sql::Result<Machine> {
    conn.prepare_cached(&format!(
        "INSERT INTO machines (mac, boot_mode, discovered_at, last_seen_at, last_seen_ip, \
         created_at, updated_at) VALUES (?1, ?2, ?3, ?3, ?4, ?3, ?3) RETURNING {COLUMNS}"
    ))?
    .query_row(
        params![mac.to_string(), BootMode::Inventory.as_str(), now, ip],
        from_row,
    )
}

/// What "discovered and not assigned" means: registered by a contact, still
/// in `bty-inventory` mode, and given nothing by an operator (no name,
/// image, target or labels).
const UNASSIGNED: &str = "discovered_at IS NOT NULL AND boot_mode = 'bty-inventory' \
    AND name IS NULL AND image IS NULL AND target_disk_serial IS NULL \
    AND NOT EXISTS (SELECT 1 FROM machine_labels l WHERE l.mac = machines.mac)";

/// The discovered machines nobody assigned beyond the newest `keep`,
/// oldest first (the ones to prune).
pub fn unassigned_beyond(conn: &Conn, keep: u32) -> sql::Result<Vec<Mac>> {
    // "No limit" spelled so both engines take it (SQLite has no bare OFFSET,
    // PostgreSQL no LIMIT -1).
    let mut st = conn.prepare_cached(&format!(
        "SELECT mac FROM machines WHERE {UNASSIGNED} \
         ORDER BY discovered_at DESC, mac DESC LIMIT 9223372036854775807 OFFSET ?1"
    ))?;
    let rows = st.query_map([keep], |r| r.get::<_, String>(0))?;
    let mut out = Vec::new();
    for r in rows {
        if let Ok(m) = r?.parse::<Mac>() {
            out.push(m);
        }
    }
    out.reverse();
    Ok(out)
}

/// Record a contact from the machine.
pub fn touch(conn: &Conn, mac: Mac, ip: &str, now: &str) -> sql::Result<()> {
    conn.prepare_cached(
        "UPDATE machines SET last_seen_at = ?2, last_seen_ip = ?3, \
         discovered_at = COALESCE(discovered_at, ?2) WHERE mac = ?1",
    )?
    .execute(params![mac.to_string(), now, ip])?;
    Ok(())
}

/// The operator-settable fields of a machine (PUT body after validation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Operator's name.
    pub name: Option<String>,
    /// Boot mode.
    pub boot_mode: BootMode,
    /// Catalog entry name.
    pub image: Option<String>,
    /// Target disk serial.
    pub target_disk_serial: Option<String>,
    /// BIOS drive for the local boot.
    pub sanboot_drive: Option<String>,
    /// Labels (deduplicated).
    pub labels: Vec<String>,
}

/// Create or fully replace the operator fields; `arm_gen` and parking are
/// set by the caller, which knows whether the policy changed.
pub fn upsert(conn: &Conn, mac: Mac, s: &Settings, arm_gen: i64, now: &str) -> sql::Result<()> {
    let key = mac.to_string();
    conn.prepare_cached(
        "INSERT INTO machines (mac, name, boot_mode, image, target_disk_serial, sanboot_drive, \
             created_at, updated_at, arm_gen) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8) \
         ON CONFLICT(mac) DO UPDATE SET name = ?2, boot_mode = ?3, image = ?4, \
             target_disk_serial = ?5, sanboot_drive = ?6, updated_at = ?7, arm_gen = ?8",
    )?
    .execute(params![
        key,
        s.name,
        s.boot_mode.as_str(),
        s.image,
        s.target_disk_serial,
        s.sanboot_drive,
        now,
        arm_gen
    ])?;
    conn.prepare_cached("DELETE FROM machine_labels WHERE mac = ?1")?
        .execute([&key])?;
    let mut ins = conn.prepare_cached(
        "INSERT INTO machine_labels (mac, label) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
    )?;
    for l in &s.labels {
        ins.execute(params![key, l])?;
    }
    Ok(())
}

/// Park (`Some(reason)`) or un-park (`None`) a machine.
pub fn set_parked(conn: &Conn, mac: Mac, reason: Option<&str>, now: &str) -> sql::Result<()> {
    conn.prepare_cached(
        "UPDATE machines SET parked_reason = ?2, parked_at = CASE WHEN CAST(?2 AS TEXT) IS NULL THEN NULL ELSE ?3 END, \
         updated_at = ?3 WHERE mac = ?1",
    )?
    .execute(params![mac.to_string(), reason, now])?;
    Ok(())
}

/// Set the inventory alternation flag.
pub fn set_inventory_local_next(conn: &Conn, mac: Mac, v: bool) -> sql::Result<()> {
    conn.prepare_cached("UPDATE machines SET inventory_local_next = ?2 WHERE mac = ?1")?
        .execute(params![mac.to_string(), v])?;
    Ok(())
}

/// Store a posted inventory.
pub fn set_inventory(
    conn: &Conn,
    mac: Mac,
    inventory_json: &str,
    ip: &str,
    now: &str,
) -> sql::Result<()> {
    conn.prepare_cached(
        "UPDATE machines SET inventory = ?2, inventory_at = ?3, last_seen_at = ?3, \
         last_seen_ip = ?4, updated_at = ?3 WHERE mac = ?1",
    )?
    .execute(params![mac.to_string(), inventory_json, now, ip])?;
    Ok(())
}

/// Delete a machine, its labels and its cycle history. Events are kept.
pub fn delete(conn: &Conn, mac: Mac) -> sql::Result<bool> {
    let key = mac.to_string();
    conn.execute("DELETE FROM cycles WHERE mac = ?1", [&key])?;
    Ok(conn.execute("DELETE FROM machines WHERE mac = ?1", [&key])? > 0)
}
