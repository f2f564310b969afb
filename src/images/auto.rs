//! `--images auto`: keep the images that are current (built from this
//! binary and its media, or pulled), pull the others, and if a pull fails
//! for any reason build what is still missing from this binary.

use std::time::Duration;

use anyhow::{bail, Result};

use super::{bars, build_local, inspect, judge, one_line, pull_one, short, Found, Source, Wanted};
use super::{BootFiles, SelfBinary, LABEL_BINARY, PULL_STALL};
use crate::engine::{ContainerEngine, Image};

/// The images present, judged: those kept, and those still to get with
/// why the one present (if any) is not used.
struct Judged {
    kept: Vec<Found>,
    todo: Vec<(Wanted, Option<String>)>,
    /// An image of this binary is there but its media could not be had
    /// to compare the boot files.
    unchecked: bool,
}

/// `--images auto` for `wanted`; the one line that says which happened
/// and why.
pub async fn auto(
    engine: &impl ContainerEngine,
    wanted: &[Wanted],
    source: &mut Source,
) -> Result<String> {
    let me = source.me()?;
    let j = judge_present(engine, wanted, &me, source).await?;
    if j.todo.is_empty() {
        return Ok(reuse_line(engine, &j, &me));
    }
    // The first present-but-unusable image says why it is replaced.
    let stale = j.todo.iter().find_map(|(_, why)| why.clone());
    let todo: Vec<Wanted> = j.todo.into_iter().map(|(w, _)| w).collect();
    let (pulled, failure) = pull_in_turn(engine, &todo).await;
    let Some((failed_ref, why)) = failure else {
        let refs: Vec<&str> = pulled.iter().map(|(_, r)| r.as_str()).collect();
        let why = stale.unwrap_or_else(|| format!("not in {} yet", engine.kind()));
        return Ok(format!("images: pulled {} ({why})", refs.join(", ")));
    };
    let because = format!(
        "{}pull of {failed_ref} failed: {}",
        stale.map(|s| format!("{s}; ")).unwrap_or_default(),
        one_line(&why, 160)
    );
    build_instead(engine, &todo[pulled.len()..], &me, source, &because).await?;
    let exe = me.path.display();
    Ok(format!("images: built locally from {exe} ({because})"))
}

/// Look at what the engine holds for each wanted image.
async fn judge_present(
    engine: &impl ContainerEngine,
    wanted: &[Wanted],
    me: &SelfBinary,
    source: &mut Source,
) -> Result<Judged> {
    let mut found: Vec<(Wanted, Option<Image>)> = Vec::new();
    for w in wanted {
        found.push((w.clone(), inspect(engine, &w.1).await?));
    }
    let (checked, unchecked) = media_to_check(&found, me, source).await;
    let mut j = Judged {
        kept: Vec::new(),
        todo: Vec::new(),
        unchecked,
    };
    for (w, img) in found {
        let Some(img) = img else {
            j.todo.push((w, None));
            continue;
        };
        match judge(&w.1, &img, &me.sha256, digest(&checked, &w)?.as_deref()) {
            Found::Unusable(why) => j.todo.push((w, Some(why))),
            f => j.kept.push(f),
        }
    }
    Ok(j)
}

/// An image of this binary is current only with this binary's media: get
/// it (a cache hit, normally) to compare the boot files. True when there
/// is such an image but its media cannot be had.
async fn media_to_check(
    found: &[(Wanted, Option<Image>)],
    me: &SelfBinary,
    source: &mut Source,
) -> (Option<BootFiles>, bool) {
    let ours = found.iter().any(|(_, f)| {
        f.as_ref()
            .is_some_and(|i| i.labels.get(LABEL_BINARY) == Some(&me.sha256))
    });
    if !ours {
        return (None, false);
    }
    let checked = source.media().await.ok().map(|(_, b)| b);
    let unchecked = checked.is_none();
    (checked, unchecked)
}

/// The boot files digest `w`'s image would carry, when the media is known.
fn digest(checked: &Option<BootFiles>, w: &Wanted) -> Result<Option<String>> {
    Ok(match checked {
        Some(b) => Some(BootFiles::digest(&b.load(&w.0)?.0)),
        None => None,
    })
}

/// The line for images all reused.
fn reuse_line(engine: &impl ContainerEngine, j: &Judged, me: &SelfBinary) -> String {
    let how = if j.kept.iter().all(|f| *f == Found::Current) {
        format!(
            "built from this binary: {}, sha256 {}",
            me.path.display(),
            short(&me.sha256)
        )
    } else if j.kept.iter().all(|f| *f == Found::Pulled) {
        "pulled earlier".to_string()
    } else {
        "pulled earlier or built from this binary".to_string()
    };
    let unchecked = if j.unchecked {
        "; their netboot media not checked: this binary's cannot be had here"
    } else {
        ""
    };
    format!(
        "images: reused the ones in {} ({how}){unchecked}; nothing to pull or build",
        engine.kind()
    )
}

/// Pull `todo` in order until one fails: those pulled, and the failure.
async fn pull_in_turn(
    engine: &impl ContainerEngine,
    todo: &[Wanted],
) -> (Vec<Wanted>, Option<(String, String)>) {
    let stall = std::env::var("BTY_LAB_PULL_STALL_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(PULL_STALL);
    let mp = bars();
    let mut pulled = Vec::new();
    for w in todo {
        if let Err(e) = pull_one(engine, &mp, &w.1, Some(stall)).await {
            return (pulled, Some((w.1.clone(), e)));
        }
        pulled.push(w.clone());
    }
    (pulled, None)
}

/// Build `rest` from this binary since a pull failed (`because`).
async fn build_instead(
    engine: &impl ContainerEngine,
    rest: &[Wanted],
    me: &SelfBinary,
    source: &mut Source,
    because: &str,
) -> Result<()> {
    if let Err(e) = me.require_static() {
        bail!("{because}, and the images cannot be built here instead: {e:#}");
    }
    let boot = match source.media().await {
        Ok((_, b)) => b,
        Err(e) => bail!("{because}, and the images cannot be built here instead: {e:#}"),
    };
    build_local(engine, rest, me, &boot).await
}
