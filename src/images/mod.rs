//! Getting the stack's images into the engine: built FROM scratch out of
//! this very binary (air-gapped labs), pulled from a registry, already
//! there, or `auto`: whichever of those fits, said in one line. Works on
//! any [`ContainerEngine`]; what a built image is made of is [`source`]'s.

mod auto;
pub mod source;

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::cli::ImagesFrom;
use crate::engine::{ContainerEngine, Image};
use crate::stack::{self, Service};
pub use auto::auto;
pub use source::{BootFiles, SelfBinary, Source};

/// Label on locally built images: the sha256 of the bty-lab binary inside.
/// `--images auto` reuses an image only when it matches the running binary.
pub const LABEL_BINARY: &str = "dev.bty.binary";
/// Label on locally built images: the sha256 of the boot files baked in
/// (names and contents; see [`BootFiles::digest`]).
pub const LABEL_BOOTFILES: &str = "dev.bty.bootfiles";

/// How long a pull under `--images auto` may go without a progress message
/// before it counts as failed (`BTY_LAB_PULL_STALL_SECS` overrides).
pub const PULL_STALL: Duration = Duration::from_secs(30);

/// A service and the image reference it runs.
pub type Wanted = (Service, String);

/// Get the `wanted` images by the route `how`; images built here come
/// from `source`. Says what happened under the current step.
pub async fn obtain(
    engine: &impl ContainerEngine,
    wanted: &[Wanted],
    how: ImagesFrom,
    source: &mut Source,
) -> Result<()> {
    let refs: Vec<String> = wanted.iter().map(|(_, r)| r.clone()).collect();
    match how {
        ImagesFrom::Auto => {
            crate::ui::detail(auto(engine, wanted, source).await?);
            Ok(())
        }
        ImagesFrom::Local => {
            let me = source.me()?;
            me.require_static()?;
            let (_, files) = source.media().await?;
            build_local(engine, wanted, &me, &files).await
        }
        ImagesFrom::Pull => pull(engine, &refs).await,
        ImagesFrom::Present => require_present(engine, &refs).await,
    }
}

/// The words for `how` in the step that gets the images.
pub fn describe(how: ImagesFrom) -> &'static str {
    match how {
        ImagesFrom::Auto => "auto: reuse, else pull, else build from this binary",
        ImagesFrom::Pull => "pull",
        ImagesFrom::Local => "build locally from this binary",
        ImagesFrom::Present => "already in the engine",
    }
}

fn bars() -> MultiProgress {
    MultiProgress::with_draw_target(indicatif::ProgressDrawTarget::stderr())
}

fn spinner(mp: &MultiProgress, msg: String) -> ProgressBar {
    let pb = mp.add(ProgressBar::new_spinner());
    pb.set_style(ProgressStyle::with_template("{spinner} {msg}").expect("a valid template"));
    pb.enable_steady_tick(Duration::from_millis(120));
    pb.set_message(msg);
    pb
}

/// Build the `wanted` images from `me` (checked to be static) and `boot`,
/// labelled with the binary's and the boot files' digests so
/// `--images auto` can tell they are current.
pub async fn build_local(
    engine: &impl ContainerEngine,
    wanted: &[Wanted],
    me: &SelfBinary,
    boot: &BootFiles,
) -> Result<()> {
    me.require_static()?;
    let mp = bars();
    for (svc, tag) in wanted {
        let (files, missing) = boot.load(svc)?;
        if !missing.is_empty() {
            crate::ui::warn(format!(
                "{tag}: no {} in {}; the image is built without {}",
                missing.join(", "),
                boot.dir.display(),
                if missing.len() == 1 { "it" } else { "them" }
            ));
        }
        let ctx = source::build_context(svc, stack::VERSION, &me.bytes, &files)?;
        let labels = HashMap::from([
            (LABEL_BINARY.to_string(), me.sha256.clone()),
            (LABEL_BOOTFILES.to_string(), BootFiles::digest(&files)),
        ]);
        let pb = spinner(&mp, format!("building {tag} from {}", me.path.display()));
        let built = engine.build_image(tag, ctx, labels).await;
        pb.finish_and_clear();
        built?;
        crate::ui::detail(format!("built {tag}"));
    }
    Ok(())
}

/// Pull one ref with a progress bar. `stall`: give up when the engine
/// sends nothing for that long. Err is the engine's message (or the stall).
async fn pull_one(
    engine: &impl ContainerEngine,
    mp: &MultiProgress,
    r: &str,
    stall: Option<Duration>,
) -> Result<(), String> {
    let pb = mp.add(ProgressBar::new(0));
    pb.set_style(
        ProgressStyle::with_template("{msg:40} [{bar:30}] {bytes}/{total_bytes}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    pb.set_message(format!("pulling {r}"));
    let progress = |done: u64, all: u64| {
        pb.set_length(all);
        pb.set_position(done);
    };
    let r = engine.pull_image(r, &progress, stall).await;
    pb.finish_and_clear();
    r.map_err(|e| e.to_string())
}

/// Pull `refs` with one progress bar each (`--images pull`: no stall limit).
pub async fn pull(engine: &impl ContainerEngine, refs: &[String]) -> Result<()> {
    let mp = bars();
    for r in refs {
        pull_one(engine, &mp, r, None).await.map_err(|why| {
            anyhow!(
                "pulling {r}: {why}\n(is the registry reachable? With --images auto, the \
                 default for new deploys, bty-lab builds the images from this binary when a pull \
                 fails; the choice is recorded for later deploys and upgrades)"
            )
        })?;
        crate::ui::detail(format!("pulled {r}"));
    }
    Ok(())
}

/// Check that every ref is already in the engine.
pub async fn require_present(engine: &impl ContainerEngine, refs: &[String]) -> Result<()> {
    let mut missing = Vec::new();
    for r in refs {
        if inspect(engine, r).await?.is_none() {
            missing.push(r.clone());
        }
    }
    if !missing.is_empty() {
        bail!(
            "images not in the {} engine: {}\nload them (docker load / podman load), or use \
             --images local or --images pull",
            engine.kind(),
            missing.join(", ")
        );
    }
    Ok(())
}

async fn inspect(engine: &impl ContainerEngine, r: &str) -> Result<Option<Image>> {
    engine
        .inspect_image(r)
        .await
        .map_err(|e| anyhow!("inspecting image {r}: {e}"))
}

/// What the engine holds under an image tag, judged for `--images auto`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// Built locally from this very binary and these boot files.
    Current,
    /// Pulled from a registry (not built by bty-lab here).
    Pulled,
    /// There but not to be used; says why.
    Unusable(String),
}

/// Judge an image (its labels and registry digests) against this binary
/// (`sha256`) and the boot files it would get (`boot_digest`; None when
/// this binary's media cannot be had here, then the binary alone decides:
/// an image built from this binary carries this binary's media). A
/// bty-lab-built image (it has the binary label) must match both. One
/// without it counts as pulled when a registry digest is recorded for its
/// repository; anything else (`docker load`, a foreign build) is not used:
/// `--images present` is the way to run such images.
pub fn judge(tag: &str, img: &Image, sha256: &str, boot_digest: Option<&str>) -> Found {
    let label = |k: &str| img.labels.get(k).map(String::as_str);
    match label(LABEL_BINARY) {
        Some(b) if b != sha256 => Found::Unusable(format!(
            "{tag} was built from another bty-lab binary (sha256 {})",
            short(b)
        )),
        Some(_) if boot_digest.is_some_and(|d| label(LABEL_BOOTFILES) != Some(d)) => {
            Found::Unusable(format!("{tag} was built with other boot files"))
        }
        Some(_) => Found::Current,
        None if pulled_from(tag, &img.repo_digests) => Found::Pulled,
        None => Found::Unusable(format!(
            "{tag} was neither built by this bty-lab nor pulled"
        )),
    }
}

/// Is a registry digest recorded for `tag`'s repository?
fn pulled_from(tag: &str, repo_digests: &[String]) -> bool {
    let (repo, _) = crate::engine::split_ref(tag);
    repo_digests
        .iter()
        .any(|d| d.split_once('@').is_some_and(|(r, _)| r == repo))
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

/// `msg` on one line; when longer than `max` characters, its end (where
/// the root cause of an engine error is), after "... ".
pub fn one_line(msg: &str, max: usize) -> String {
    let flat = msg.split_whitespace().collect::<Vec<_>>().join(" ");
    let n = flat.chars().count();
    if n <= max {
        return flat;
    }
    let tail: String = flat.chars().skip(n - max).collect();
    format!("... {}", tail.trim_start())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_reuses_only_images_of_this_binary_or_pulled_ones() {
        let tag = "127.0.0.1:5000/bty/bty-web:0.1.0";
        let ours = Image {
            labels: HashMap::from([
                (LABEL_BINARY.to_string(), "aa".to_string()),
                (LABEL_BOOTFILES.to_string(), "bb".to_string()),
            ]),
            repo_digests: vec![],
        };
        assert_eq!(judge(tag, &ours, "aa", Some("bb")), Found::Current);
        // This binary's media not to be had here: the binary decides.
        assert_eq!(judge(tag, &ours, "aa", None), Found::Current);
        let Found::Unusable(why) = judge(tag, &ours, "cc", Some("bb")) else {
            panic!("another binary's image reused")
        };
        assert!(why.contains("another bty-lab binary"), "{why}");
        assert!(matches!(
            judge(tag, &ours, "aa", Some("dd")),
            Found::Unusable(w) if w.contains("other boot files")
        ));
        // A pulled image has a registry digest for its repository.
        let pulled = |d: &str| Image {
            labels: HashMap::new(),
            repo_digests: vec![d.to_string()],
        };
        let here = pulled("127.0.0.1:5000/bty/bty-web@sha256:0123");
        assert_eq!(judge(tag, &here, "aa", Some("bb")), Found::Pulled);
        let elsewhere = pulled("elsewhere/bty-web@sha256:0123");
        assert!(matches!(
            judge(tag, &elsewhere, "aa", Some("bb")),
            Found::Unusable(_)
        ));
        assert!(matches!(
            judge(tag, &Image::default(), "aa", Some("bb")),
            Found::Unusable(_)
        ));
    }

    #[test]
    fn one_line_keeps_the_end_of_long_messages() {
        assert_eq!(one_line("a\n  b", 10), "a b");
        let long = format!("{} no such host", "x".repeat(300));
        let l = one_line(&long, 40);
        assert!(l.starts_with("... ") && l.ends_with("no such host"), "{l}");
        assert!(l.chars().count() <= 44);
    }
}
