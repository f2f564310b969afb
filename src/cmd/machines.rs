//! `bty-lab machines import|export`: bty-web's machine registry in bulk
//! (`POST /api/machines/import`, `GET /api/machines/export`). bty-web
//! reads and checks the file, so the CLI and the Machines page accept
//! exactly the same files; the CLI only picks the format, sends the bytes
//! and prints bty-web's report.

use std::io::Write as _;
use std::path::Path;

use anyhow::{bail, Context as _, Result};
use reqwest::{Method, StatusCode};
use serde::Deserialize;

use crate::cli::{MachinesCommand, MachinesExportArgs, MachinesImportArgs};
use crate::exit;
use crate::webapi::{Api, Payload};

pub async fn run(c: MachinesCommand) -> Result<()> {
    match c {
        MachinesCommand::Import(a) => import(a).await,
        MachinesCommand::Export(a) => export(a).await,
    }
}

/// bty-web's import report (the fields the CLI prints).
#[derive(Debug, Deserialize)]
struct Report {
    applied: bool,
    created: usize,
    updated: usize,
    unchanged: usize,
    rows: Vec<Row>,
}

#[derive(Debug, Deserialize)]
struct Row {
    line: u64,
    errors: Vec<FieldError>,
}

#[derive(Debug, Deserialize)]
struct FieldError {
    field: String,
    message: String,
}

/// The Content-Type a file's extension means.
fn content_type(file: &Path) -> Result<&'static str> {
    let ext = file.extension().and_then(|e| e.to_str()).unwrap_or("");
    match ext.to_ascii_lowercase().as_str() {
        "csv" => Ok("text/csv"),
        "json" => Ok("application/json"),
        _ => bail!(
            "{}: the file name must end in .csv or .json (it says which format the file is)",
            file.display()
        ),
    }
}

async fn import(a: MachinesImportArgs) -> Result<()> {
    let content_type = content_type(&a.file)?;
    let bytes = std::fs::read(&a.file).with_context(|| format!("reading {}", a.file.display()))?;
    // Checked here too: bty-web answers 413 as soon as it sees the length
    // and closes the connection, which can cut the upload short with a
    // broken pipe before its answer is read.
    if bytes.len() > bty_web::IMPORT_LIMIT {
        return Err(too_large(&a.file));
    }
    let mut api = Api::for_args(&a.server)?;
    let path = if a.dry_run {
        "/api/machines/import?dry_run=true"
    } else {
        "/api/machines/import"
    };
    let body = Payload::Raw {
        content_type,
        bytes: &bytes,
    };
    let (status, answer) = api
        .call_with(
            Method::POST,
            path,
            Some(body),
            &[
                StatusCode::UNPROCESSABLE_ENTITY,
                StatusCode::PAYLOAD_TOO_LARGE,
            ],
        )
        .await?;
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        return Err(too_large(&a.file));
    }
    let report: Report = serde_json::from_slice(&answer)
        .with_context(|| format!("bty-web's import answer (HTTP {status}) is not a report"))?;
    if status == StatusCode::UNPROCESSABLE_ENTITY {
        return Err(refusal(&a.file, &report));
    }
    let (file, c, u, n) = (
        a.file.display(),
        report.created,
        report.updated,
        report.unchanged,
    );
    if report.applied {
        println!("imported {file}: {c} created, {u} updated, {n} unchanged");
    } else {
        println!("{file} is valid; an import would create {c}, update {u}, leave {n} unchanged (dry run: nothing written)");
    }
    Ok(())
}

fn too_large(file: &Path) -> anyhow::Error {
    exit::refused(format!(
        "{}: bty-web takes files of at most {} MiB; split it into several imports",
        file.display(),
        bty_web::IMPORT_LIMIT >> 20
    ))
}

/// Every row error as `FILE:LINE: FIELD: message` on stderr, and the
/// refusal that says nothing was imported.
fn refusal(file: &Path, report: &Report) -> anyhow::Error {
    let file = file.display();
    let mut bad = 0;
    for r in report.rows.iter().filter(|r| !r.errors.is_empty()) {
        bad += 1;
        for e in &r.errors {
            eprintln!("{file}:{}: {}: {}", r.line, e.field, e.message);
        }
    }
    exit::refused(format!(
        "{file}: {bad} row(s) with errors; nothing was imported"
    ))
}

async fn export(a: MachinesExportArgs) -> Result<()> {
    let from_out = a
        .out
        .as_deref()
        .and_then(|p| p.extension())
        .and_then(|e| e.to_str())
        .filter(|e| e.eq_ignore_ascii_case("json"))
        .map(|_| "json");
    let format = a.format.as_deref().or(from_out).unwrap_or("csv");
    let mut api = Api::for_args(&a.server)?;
    let path = format!("/api/machines/export?format={format}");
    let (_, bytes) = api.call_with(Method::GET, &path, None, &[]).await?;
    match &a.out {
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(&bytes).context("writing to stdout")?;
            out.flush().context("writing to stdout")?;
        }
        Some(p) => {
            write_atomically(p, &bytes)?;
            eprintln!("wrote {} ({} bytes, {format})", p.display(), bytes.len());
        }
    }
    Ok(())
}

/// Write `bytes` to `path` whole or not at all: a temp file beside it,
/// mode 0644, renamed over it once complete.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a temp file in {}", dir.display()))?;
    tmp.write_all(bytes)
        .and_then(|()| tmp.as_file().sync_all())
        .with_context(|| format!("writing {}", tmp.path().display()))?;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o644))
        .with_context(|| format!("chmod 0644 {}", tmp.path().display()))?;
    tmp.persist(path)
        .with_context(|| format!("renaming the temp file to {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_extension_names_the_format() {
        assert_eq!(content_type(Path::new("a/m.CSV")).unwrap(), "text/csv");
        assert_eq!(
            content_type(Path::new("m.json")).unwrap(),
            "application/json"
        );
        let e = content_type(Path::new("m.txt")).unwrap_err().to_string();
        assert!(e.contains(".csv") && e.contains(".json"), "{e}");
    }

    #[test]
    fn export_files_are_written_whole_with_mode_0644() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.csv");
        std::fs::write(&p, "old").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        write_atomically(&p, b"new").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp left"
        );
    }
}
