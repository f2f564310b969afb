//! `bty-lab image add|ls|rm`: bty-web's image catalog over its REST API
//! (`POST /api/images`, `GET /api/images`, `DELETE /api/images/{name}`),
//! so adding an image is one command on the host, wherever bty-web runs.
//!
//! The server is `--server`, else the deploy in `--dest` (its manifest
//! knows the host address and web port), else `http://127.0.0.1:8080`
//! (`bty-lab serve`'s default). The password is asked for only when
//! bty-web wants one.

use anyhow::Result;
use indicatif::HumanBytes;
use reqwest::Method;
use serde_json::{json, Value};

use crate::cli::{ImageAddArgs, ImageCommand, ImageLsArgs, ImageRmArgs};
use crate::webapi::Api;

pub async fn run(c: ImageCommand) -> Result<()> {
    match c {
        ImageCommand::Add(a) => add(a).await,
        ImageCommand::Ls(a) => ls(a).await,
        ImageCommand::Rm(a) => rm(a).await,
    }
}

async fn add(a: ImageAddArgs) -> Result<()> {
    let mut api = Api::for_args(&a.server)?;
    let body = json!({
        "name": a.name, "url": a.url, "sha256": a.sha256,
        "size": a.size, "format": a.format,
    });
    let img = api.call(Method::POST, "/api/images", Some(&body)).await?;
    println!(
        "added {}: withcache is downloading it from {}; machines can be assigned it now",
        str_of(&img["name"]),
        str_of(&img["src"])
    );
    println!("  machines fetch it from {}", str_of(&img["url"]));
    Ok(())
}

async fn ls(a: ImageLsArgs) -> Result<()> {
    let mut api = Api::for_args(&a.server)?;
    let v = api.call(Method::GET, "/api/images", None).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    print!("{}", table(&v));
    for p in v["problems"].as_array().into_iter().flatten() {
        crate::ui::warn(str_of(p));
    }
    for (name, key) in [("withcache", "withcache"), ("static file", "static_file")] {
        if v[key]["state"] == "unreachable" {
            let why = str_of(&v[key]["error"]);
            crate::ui::warn(format!("{name} is unreachable: {why}"));
        }
    }
    Ok(())
}

async fn rm(a: ImageRmArgs) -> Result<()> {
    let mut api = Api::for_args(&a.server)?;
    let path = format!("/api/images/{}", a.name.replace('+', "%2B"));
    api.call(Method::DELETE, &path, None).await?;
    println!(
        "removed {} (withcache keeps its bytes until it needs the room)",
        a.name
    );
    Ok(())
}

fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

/// The `image ls` table: name, source, format, size, sha256 prefix and
/// withcache's state.
fn table(v: &Value) -> String {
    let head = ["NAME", "SOURCE", "FORMAT", "SIZE", "SHA256", "STATE"].map(String::from);
    let images = v["images"].as_array().into_iter().flatten();
    let rows: Vec<[String; 6]> = std::iter::once(head).chain(images.map(row)).collect();
    if rows.len() == 1 {
        return "no images; add one with `bty-lab image add NAME URL`\n".into();
    }
    let widths: Vec<usize> = (0..6)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let cells: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// One image's cells.
fn row(i: &Value) -> [String; 6] {
    let size = i["size"].as_u64().map(|n| HumanBytes(n).to_string());
    let sha = i["sha256"].as_str().map(|s| s.chars().take(12).collect());
    [
        str_of(&i["name"]).to_string(),
        str_of(&i["source"]).to_string(),
        str_of(&i["resolved_format"]).to_string(),
        size.unwrap_or_else(|| "-".into()),
        sha.unwrap_or_else(|| "-".into()),
        state(&i["cache"]),
    ]
}

/// withcache's word for an image's bytes, with progress while it downloads.
fn state(cache: &Value) -> String {
    match cache["state"].as_str() {
        None => "-".into(),
        Some("downloading") => match (cache["written"].as_u64(), cache["total"].as_u64()) {
            (Some(w), Some(t)) if t > 0 => format!("downloading {}%", w * 100 / t),
            _ => "downloading".into(),
        },
        Some("absent") => "on first use".into(),
        Some(s) => s.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_lines_up_and_says_the_state() {
        let v = json!({"images": [
            {"name": "debian-12", "source": "static", "resolved_format": "img.zst",
             "size": 1536, "sha256": "0123456789abcdef0123", "cache": {"state": "cached"}},
            {"name": "x", "source": "withcache", "resolved_format": "img",
             "cache": {"state": "downloading", "written": 25, "total": 100}},
            {"name": "y", "source": "static", "resolved_format": "qcow2", "cache": null},
        ]});
        let t = table(&v);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4, "{t}");
        assert!(lines[0].starts_with("NAME       SOURCE"), "{t}");
        assert!(
            lines[1].contains("1.50 KiB") && lines[1].contains("0123456789ab  cached"),
            "{t}"
        );
        assert!(!lines[1].contains("0123456789abc"), "{t}");
        assert!(lines[2].ends_with("downloading 25%"), "{t}");
        assert!(lines[3].ends_with('-'), "{t}");
        assert!(table(&json!({"images": []})).contains("bty-lab image add"));
    }
}
