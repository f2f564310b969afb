//! The bty-web a stick is built for (`usb build --server URL`): URL images
//! come through its withcache (the catalog entry whose origin is that URL,
//! added when there is none), so the fleet's cache, not the origin, serves
//! them; and a stick key is minted there for the wizard
//! ([`bty_proto::stick::Manifest::key`]).

use anyhow::{bail, Context as _, Result};
use reqwest::Method;
use serde_json::json;

use super::images::{Source, Spec};
use crate::webapi::Api;

/// A logged-in link to the stick's bty-web.
pub struct Server {
    api: Api,
    base: String,
}

/// A key minted for the stick.
#[derive(Debug, Clone)]
pub struct Key {
    /// The secret the wizard sends (`Authorization: Bearer`).
    pub key: String,
    /// Its label on the server's Settings page.
    pub label: String,
}

fn say(msg: impl AsRef<str>) {
    eprintln!("usb: {}", msg.as_ref());
}

impl Server {
    /// bty-web at `base`, as `user`; the password as [`Api::new`] finds it.
    pub fn new(base: &str, user: &str, password_stdin: bool) -> Result<Server> {
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            bail!("--server {base:?}: expected an http:// or https:// URL of a bty-web");
        }
        Ok(Server {
            api: Api::new(base.to_string(), user, password_stdin)?,
            base: base.trim_end_matches('/').to_string(),
        })
    }

    /// Point every URL image of `specs` at the server's download URL for
    /// it (withcache's blob URL), adding a catalog entry named like the
    /// image when the catalog has none for that origin. Its first request
    /// is also the login check, done even with no URL image so a wrong
    /// password fails before the build. Returns the names in the catalog
    /// (what `--auto image=` may name besides the stick's own images).
    pub async fn through_cache(&mut self, specs: &mut [Spec]) -> Result<Vec<String>> {
        let listed = self
            .api
            .call(Method::GET, "/api/images", None)
            .await
            .with_context(|| format!("listing the images of bty-web at {}", self.base))?;
        let catalog = listed["images"].as_array().cloned().unwrap_or_default();
        let mut names: Vec<String> = catalog
            .iter()
            .filter_map(|i| i["name"].as_str().map(str::to_string))
            .collect();
        for s in specs.iter_mut() {
            let Source::Url(origin) = &s.source else {
                continue;
            };
            let origin = origin.clone();
            let known = catalog.iter().find(|i| i["src"].as_str() == Some(&origin));
            let entry = match known {
                Some(e) => e.clone(),
                None => {
                    let body = json!({ "name": s.name, "url": origin });
                    let added = self
                        .api
                        .call(Method::POST, "/api/images", Some(&body))
                        .await
                        .with_context(|| {
                            format!(
                                "adding {}={origin} to the catalog of bty-web at {} (so its \
                                 withcache fetches it once for the stick and the fleet)",
                                s.name, self.base
                            )
                        })?;
                    say(format!(
                        "added {} to the catalog of {}: withcache fetches it from {origin}",
                        added["name"].as_str().unwrap_or(&s.name),
                        self.base
                    ));
                    names.push(s.name.clone());
                    added
                }
            };
            let Some(url) = entry["url"].as_str().filter(|u| !u.is_empty()) else {
                bail!(
                    "bty-web at {} gave no download URL for {origin}; is this a bty-web?",
                    self.base
                );
            };
            if url == origin {
                say(format!(
                    "bty-web at {} has no withcache: {} comes from its origin",
                    self.base, s.name
                ));
            } else {
                say(format!("{} comes through withcache: {url}", s.name));
            }
            s.source = Source::Url(url.to_string());
        }
        Ok(names)
    }

    /// Mint a stick key labelled `label`.
    pub async fn mint_key(&mut self, label: &str) -> Result<Key> {
        let body = json!({ "label": label });
        let v = self
            .api
            .call(Method::POST, "/api/sticks", Some(&body))
            .await
            .with_context(|| format!("minting a stick key on bty-web at {}", self.base))?;
        let key = v["key"].as_str().unwrap_or_default();
        if !key.starts_with(bty_proto::stick::KEY_PREFIX) {
            bail!(
                "bty-web at {} answered POST /api/sticks without a stick key: is it older than \
                 this bty-lab? (upgrade it, or build without --server)",
                self.base
            );
        }
        Ok(Key {
            key: key.to_string(),
            label: v["label"].as_str().unwrap_or(label).to_string(),
        })
    }
}

/// The default key label: the stick's file name and this host (bty-web
/// records when it was minted).
pub fn default_label(out: &std::path::Path) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let file = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "stick".into());
    let mut label = format!("{file} (usb build on {host})");
    // bty-web takes at most 80 characters.
    if label.chars().count() > 80 {
        label = label.chars().take(80).collect();
    }
    label
}
