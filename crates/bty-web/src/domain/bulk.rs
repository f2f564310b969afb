//! Importing and exporting many machines at once, as CSV or as JSON.
//!
//! An import is all or nothing: every row is checked by the same
//! [`registry::validate`] as `PUT /api/machines/{mac}` (plus a MAC that
//! parses and appears once in the file); if one row fails, nothing is
//! written and the report names each failing row's line and field.
//! Otherwise every created or changed machine is written by the same
//! [`registry::put_in`] as a PUT (the same re-arming, events and live
//! messages, one `machine.created` / `machine.updated` event per machine),
//! all in one transaction holding [`Lock::Global`]. Rows equal to the
//! stored machine are left untouched (no event): importing an export
//! again changes nothing. Machines the file does not name are kept; an
//! import never deletes.
//!
//! The file format, both ways: the columns of [`COLUMNS`]; in CSV an
//! empty cell is "not set" and the labels share one cell, separated by
//! [`LABEL_SEP`] (a comma is also accepted on import); in JSON an array of
//! objects with those keys, `null` for "not set" and `labels` an array.

use std::collections::{HashMap, HashSet};

use bty_proto::Mac;
use serde::{Deserialize, Serialize};

use super::journal::Journal;
use super::registry::{self, MachinePut};
use super::{Domain, DomainError, Result};
use crate::catalog::Catalog;
use crate::db::machines::{self, Machine, Settings};
use crate::db::sql::{Conn, Lock};

/// The columns of a machines file, in the order an export writes them.
pub const COLUMNS: [&str; 7] = [
    "mac",
    "name",
    "boot_mode",
    "image",
    "target_disk_serial",
    "sanboot_drive",
    "labels",
];

/// What separates labels in a CSV cell. A semicolon, not the UI's comma,
/// so that a labels cell needs no CSV quoting and a file stays easy to
/// edit by hand.
pub const LABEL_SEP: char = ';';

/// A machines file's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Comma-separated, a header line first.
    Csv,
    /// A JSON array of objects.
    Json,
}

impl Format {
    /// `csv` or `json`.
    pub fn parse(s: &str) -> Option<Format> {
        match s.to_ascii_lowercase().as_str() {
            "csv" => Some(Format::Csv),
            "json" => Some(Format::Json),
            _ => None,
        }
    }
}

/// One machine as a file holds it (the JSON object; a CSV row maps to it).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// MAC address, any notation [`Mac`] parses.
    pub mac: String,
    /// Operator's name.
    #[serde(default)]
    pub name: Option<String>,
    /// Boot mode name (none: `ipxe-exit`).
    #[serde(default)]
    pub boot_mode: Option<String>,
    /// Catalog image name.
    #[serde(default)]
    pub image: Option<String>,
    /// Serial of the disk a flash writes.
    #[serde(default)]
    pub target_disk_serial: Option<String>,
    /// BIOS drive for the local boot.
    #[serde(default)]
    pub sanboot_drive: Option<String>,
    /// Labels.
    #[serde(default)]
    pub labels: Vec<String>,
}

impl Record {
    fn of(m: &Machine) -> Record {
        Record {
            mac: m.mac.to_string(),
            name: m.name.clone(),
            boot_mode: Some(m.boot_mode.as_str().to_string()),
            image: m.image.clone(),
            target_disk_serial: m.target_disk_serial.clone(),
            sanboot_drive: m.sanboot_drive.clone(),
            labels: m.labels.clone(),
        }
    }

    fn into_put(self) -> MachinePut {
        MachinePut {
            boot_mode: self.boot_mode,
            image: self.image,
            target_disk_serial: self.target_disk_serial,
            sanboot_drive: self.sanboot_drive,
            labels: self.labels,
            name: self.name,
        }
    }
}

/// A row of a parsed file: where it was and what it says, or why it
/// could not be read.
#[derive(Debug)]
pub struct Input {
    /// CSV: the file's line number (the header is line 1); JSON: the
    /// array index + 1.
    pub line: u64,
    /// The record, or the problems reading it.
    pub record: std::result::Result<Record, Vec<FieldError>>,
}

/// One problem of one row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    /// The column at fault (`mac`, `boot_mode`, ...; `row` or `header`
    /// when the row itself could not be read).
    pub field: String,
    /// What is wrong, for the operator.
    pub message: String,
}

impl FieldError {
    fn new(field: &str, message: impl Into<String>) -> FieldError {
        FieldError {
            field: field.to_string(),
            message: message.into(),
        }
    }
}

/// What an import does (or would do) with a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// The MAC is new: the machine is created.
    Create,
    /// The machine exists with other settings: they are replaced.
    Update,
    /// The machine exists with exactly these settings: nothing happens.
    Unchanged,
    /// The row has errors: nothing can happen.
    Invalid,
}

/// One row of an import's report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RowReport {
    /// See [`Input::line`].
    pub line: u64,
    /// The MAC as the row spells it (canonical once it parsed).
    pub mac: String,
    /// What the import does with it.
    pub action: Action,
    /// Its problems; empty for a valid row.
    pub errors: Vec<FieldError>,
}

/// What an import did (or, refused or dry, would do).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// The rows were written.
    pub applied: bool,
    /// Rows that create a machine.
    pub created: usize,
    /// Rows that change a machine.
    pub updated: usize,
    /// Rows equal to their stored machine.
    pub unchanged: usize,
    /// Every row, in file order.
    pub rows: Vec<RowReport>,
}

impl Report {
    /// Some row has an error (the import was refused).
    pub fn has_errors(&self) -> bool {
        self.rows.iter().any(|r| !r.errors.is_empty())
    }
}

/// Read a machines file. A problem with the whole file (not UTF-8, not
/// a JSON array, a header without `mac` or with an unknown column) is
/// the error; a problem with one row is in that row's [`Input`].
pub fn parse(format: Format, body: &[u8]) -> std::result::Result<Vec<Input>, FieldError> {
    match format {
        Format::Csv => parse_csv(body),
        Format::Json => parse_json(body),
    }
}

fn parse_csv(body: &[u8]) -> std::result::Result<Vec<Input>, FieldError> {
    // Spreadsheets save CSV with a byte-order mark.
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let mut rd = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(body);
    let header = rd
        .headers()
        .map_err(|e| FieldError::new("header", e.to_string()))?
        .clone();
    let mut cols = Vec::with_capacity(header.len());
    for h in &header {
        let Some(&c) = COLUMNS.iter().find(|c| c.eq_ignore_ascii_case(h)) else {
            return Err(FieldError::new(
                "header",
                format!(
                    "unknown column {h:?}; the columns are {}",
                    COLUMNS.join(",")
                ),
            ));
        };
        if cols.contains(&c) {
            return Err(FieldError::new("header", format!("column {h:?} twice")));
        }
        cols.push(c);
    }
    if !cols.contains(&"mac") {
        return Err(FieldError::new(
            "header",
            format!(
                "the first line must be the header and name the mac column: {}",
                COLUMNS.join(",")
            ),
        ));
    }
    let lines = Lines::of(body);
    let mut out = Vec::new();
    for rec in rd.records() {
        let input = match rec {
            Ok(r) => csv_row(&r, &cols, lines.of_record(r.position())),
            Err(e) => Input {
                line: lines.of_record(e.position()),
                record: Err(vec![FieldError::new("row", e.to_string())]),
            },
        };
        out.push(input);
    }
    Ok(out)
}

/// Line numbers from byte offsets. The csv crate's own line of a record
/// that follows blank lines is the first blank line's, so the line is
/// counted here, past the blank lines, from the record's byte offset.
struct Lines<'a> {
    body: &'a [u8],
    /// Offsets of every `\n`.
    newlines: Vec<usize>,
}

impl<'a> Lines<'a> {
    fn of(body: &'a [u8]) -> Lines<'a> {
        let newlines = body
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'\n')
            .map(|(i, _)| i)
            .collect();
        Lines { body, newlines }
    }

    fn of_record(&self, pos: Option<&csv::Position>) -> u64 {
        let Some(pos) = pos else { return 0 };
        let mut at = usize::try_from(pos.byte()).unwrap_or(usize::MAX);
        while self
            .body
            .get(at)
            .is_some_and(|b| matches!(b, b'\n' | b'\r'))
        {
            at += 1;
        }
        // Offsets before `at` are the lines above it.
        self.newlines.partition_point(|&n| n < at) as u64 + 1
    }
}

fn csv_row(r: &csv::StringRecord, cols: &[&str], line: u64) -> Input {
    if r.len() != cols.len() {
        let msg = format!("{} fields, the header has {}", r.len(), cols.len());
        return Input {
            line,
            record: Err(vec![FieldError::new("row", msg)]),
        };
    }
    let mut rec = Record::default();
    for (v, &c) in r.iter().zip(cols) {
        let text = (!v.is_empty()).then(|| v.to_string());
        match c {
            "mac" => rec.mac = v.to_string(),
            "name" => rec.name = text,
            "boot_mode" => rec.boot_mode = text,
            "image" => rec.image = text,
            "target_disk_serial" => rec.target_disk_serial = text,
            "sanboot_drive" => rec.sanboot_drive = text,
            _ => {
                rec.labels = v
                    .split([LABEL_SEP, ','])
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_string)
                    .collect()
            }
        }
    }
    Input {
        line,
        record: Ok(rec),
    }
}

fn parse_json(body: &[u8]) -> std::result::Result<Vec<Input>, FieldError> {
    let all: Vec<serde_json::Value> = serde_json::from_slice(body).map_err(|e| {
        FieldError::new(
            "json",
            format!("the body must be a JSON array of machine objects: {e}"),
        )
    })?;
    Ok(all
        .into_iter()
        .enumerate()
        .map(|(i, v)| Input {
            line: i as u64 + 1,
            record: serde_json::from_value::<Record>(v)
                .map_err(|e| vec![FieldError::new(json_field(&e.to_string()), e.to_string())]),
        })
        .collect())
}

/// The key a serde message is about (`unknown field `x``, `missing
/// field `mac``), else `row`.
fn json_field(msg: &str) -> &str {
    let named = msg.split('`').nth(1).filter(|f| COLUMNS.contains(f));
    named.unwrap_or("row")
}

/// A checked row: its settings, or its problems.
struct Checked {
    line: u64,
    mac_text: String,
    valid: std::result::Result<(Mac, Settings), Vec<FieldError>>,
}

/// Check every row as a PUT would, and each MAC's uniqueness in the file
/// (the second occurrence is the error).
fn check(inputs: Vec<Input>, catalog: &Catalog) -> Vec<Checked> {
    let mut seen: HashMap<Mac, u64> = HashMap::new();
    inputs
        .into_iter()
        .map(|input| {
            let line = input.line;
            let rec = match input.record {
                Ok(r) => r,
                Err(errors) => {
                    return Checked {
                        line,
                        mac_text: String::new(),
                        valid: Err(errors),
                    }
                }
            };
            let mut errors = Vec::new();
            let mac = match rec.mac.parse::<Mac>() {
                Ok(m) => match seen.insert(m, line) {
                    Some(first) => {
                        seen.insert(m, first);
                        let msg = format!("mac {m} is already on line {first} of this file");
                        errors.push(FieldError::new("mac", msg));
                        None
                    }
                    None => Some(m),
                },
                Err(e) => {
                    errors.push(FieldError::new("mac", format!("mac: {e}")));
                    None
                }
            };
            let mac_text = mac.map_or_else(|| rec.mac.clone(), |m| m.to_string());
            let settings = match registry::validate(rec.into_put(), catalog) {
                Ok(s) => Some(s),
                Err(DomainError::Invalid { field, msg }) => {
                    errors.push(FieldError::new(field, msg));
                    None
                }
                Err(e) => {
                    errors.push(FieldError::new("row", e.to_string()));
                    None
                }
            };
            let valid = match (mac, settings) {
                (Some(m), Some(s)) if errors.is_empty() => Ok((m, s)),
                _ => Err(errors),
            };
            Checked {
                line,
                mac_text,
                valid,
            }
        })
        .collect()
}

/// The stored machine already has these settings.
fn same(m: &Machine, s: &Settings) -> bool {
    // Sorted both sides: the store orders labels by its own collation.
    let sorted = |l: &[String]| {
        let mut l = l.to_vec();
        l.sort();
        l
    };
    m.name == s.name
        && m.boot_mode == s.boot_mode
        && m.image == s.image
        && m.target_disk_serial == s.target_disk_serial
        && m.sanboot_drive == s.sanboot_drive
        && sorted(&m.labels) == sorted(&s.labels)
}

/// Plan the checked rows against the registry and, when every row is
/// valid and `apply` is set, write them all in one transaction.
fn run(conn: &mut Conn, rows: Vec<Checked>, apply: bool) -> Result<(Report, Journal)> {
    let refused = rows.iter().any(|r| r.valid.is_err());
    let apply = apply && !refused;
    let tx = conn.transaction(if apply { Lock::Global } else { Lock::Read })?;
    let mut j = Journal::start();
    let named: HashSet<Mac> = rows
        .iter()
        .filter_map(|r| r.valid.as_ref().ok().map(|(m, _)| *m))
        .collect();
    let existing: HashMap<Mac, Machine> = machines::list(&tx)?
        .into_iter()
        .filter(|m| named.contains(&m.mac))
        .map(|m| (m.mac, m))
        .collect();
    let mut report = Report {
        applied: apply,
        created: 0,
        updated: 0,
        unchanged: 0,
        rows: Vec::with_capacity(rows.len()),
    };
    for r in rows {
        let (action, errors) = match &r.valid {
            Err(errors) => (Action::Invalid, errors.clone()),
            Ok((mac, s)) => {
                let old = existing.get(mac);
                let action = match old {
                    None => Action::Create,
                    Some(m) if same(m, s) => Action::Unchanged,
                    Some(_) => Action::Update,
                };
                if apply && action != Action::Unchanged {
                    registry::put_in(&tx, &mut j, *mac, s, old)?;
                }
                (action, Vec::new())
            }
        };
        match action {
            Action::Create => report.created += 1,
            Action::Update => report.updated += 1,
            Action::Unchanged => report.unchanged += 1,
            Action::Invalid => {}
        }
        report.rows.push(RowReport {
            line: r.line,
            mac: r.mac_text,
            action,
            errors,
        });
    }
    if apply {
        tx.commit()?;
    }
    Ok((report, j))
}

/// Every machine as a file would hold it, ordered by MAC.
pub fn records(conn: &Conn) -> Result<Vec<Record>> {
    Ok(machines::list(conn)?.iter().map(Record::of).collect())
}

/// `records` written as `format`; the same machines give the same bytes.
pub fn write(format: Format, records: &[Record]) -> Result<Vec<u8>> {
    let internal = |e: &dyn std::fmt::Display| DomainError::Internal(format!("export: {e}"));
    match format {
        Format::Json => {
            let mut v = serde_json::to_vec_pretty(records).map_err(|e| internal(&e))?;
            v.push(b'\n');
            Ok(v)
        }
        Format::Csv => {
            let mut w = csv::Writer::from_writer(Vec::new());
            w.write_record(COLUMNS).map_err(|e| internal(&e))?;
            for r in records {
                let labels = r.labels.join(&LABEL_SEP.to_string());
                let opt = |v: &Option<String>| v.clone().unwrap_or_default();
                w.write_record([
                    r.mac.clone(),
                    opt(&r.name),
                    opt(&r.boot_mode),
                    opt(&r.image),
                    opt(&r.target_disk_serial),
                    opt(&r.sanboot_drive),
                    labels,
                ])
                .map_err(|e| internal(&e))?;
            }
            w.into_inner().map_err(|e| internal(&e))
        }
    }
}

impl Domain {
    /// Import parsed rows (see the module's doc): check every one, then
    /// write them all in one transaction unless one failed or `dry_run`.
    /// The report says which ([`Report::applied`], [`Report::has_errors`]).
    pub async fn import_machines(&self, inputs: Vec<Input>, dry_run: bool) -> Result<Report> {
        let checked = check(inputs, &self.catalog);
        self.write(move |c| {
            let (report, j) = run(c, checked, !dry_run)?;
            Ok((report, j.bus))
        })
        .await
    }

    /// Every machine written as `format`, ordered by MAC.
    pub async fn export_machines(&self, format: Format) -> Result<Vec<u8>> {
        self.read(move |c| write(format, &records(c)?)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csv_inputs(text: &str) -> Vec<Input> {
        parse(Format::Csv, text.as_bytes()).unwrap()
    }

    #[test]
    fn csv_rows_carry_their_file_line_and_labels_split() {
        let text = "mac,labels,name\n\n52:54:00:00:00:01,\"a;b, c\",x\n\"52:54:00:00:00:02\",,\"multi\nline\"\n52:54:00:00:00:03\n";
        let rows = csv_inputs(text);
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].line, 3, "blank line 2 skipped, still counted");
        let r0 = rows[0].record.as_ref().unwrap();
        assert_eq!(r0.labels, ["a", "b", "c"]);
        assert_eq!(r0.name.as_deref(), Some("x"));
        assert_eq!(rows[1].line, 4);
        assert_eq!(rows[2].line, 6, "the quoted cell spans lines 4 and 5");
        let e = rows[2].record.as_ref().unwrap_err();
        assert_eq!(e[0].field, "row");
    }

    #[test]
    fn a_bad_header_is_a_file_error() {
        let e = parse(Format::Csv, b"mac,colour\n").unwrap_err();
        assert!(e.message.contains("colour"), "{e:?}");
        let e = parse(Format::Csv, b"name\nx\n").unwrap_err();
        assert!(e.message.contains("mac"), "{e:?}");
        let e = parse(Format::Json, b"{}").unwrap_err();
        assert_eq!(e.field, "json");
    }

    #[test]
    fn json_rows_are_numbered_from_one_and_name_unknown_keys() {
        let rows = parse(
            Format::Json,
            br#"[{"mac":"52:54:00:00:00:01"},{"mac":"x","colour":"red"},{"name":"n"}]"#,
        )
        .unwrap();
        assert_eq!(rows[0].line, 1);
        assert!(rows[0].record.is_ok());
        assert_eq!(rows[1].record.as_ref().unwrap_err()[0].field, "row");
        assert_eq!(rows[2].line, 3);
        assert_eq!(rows[2].record.as_ref().unwrap_err()[0].field, "mac");
    }

    #[test]
    fn csv_export_writes_the_header_and_joins_labels() {
        let r = Record {
            mac: "52:54:00:00:00:01".into(),
            name: Some("a,b".into()),
            boot_mode: Some("ipxe-exit".into()),
            labels: vec!["gpu".into(), "rack1".into()],
            ..Record::default()
        };
        let out = String::from_utf8(write(Format::Csv, &[r]).unwrap()).unwrap();
        assert_eq!(
            out,
            "mac,name,boot_mode,image,target_disk_serial,sanboot_drive,labels\n\
             52:54:00:00:00:01,\"a,b\",ipxe-exit,,,,gpu;rack1\n"
        );
    }
}
