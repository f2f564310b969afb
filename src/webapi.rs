//! bty-web's admin REST API as the CLI calls it (`image add|ls|rm`,
//! `machines import|export`, `usb build --server`): one client that finds the server, asks for the
//! password only when bty-web wants one, and turns refusals into bty-web's
//! own words.

use std::io::{BufRead as _, IsTerminal as _};

use anyhow::{bail, Context as _, Result};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::cli::ServerArgs;
use crate::deploydir;

/// Where `bty-lab serve` listens by default.
const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

/// bty-web's base URL for these flags.
fn server_url(a: &ServerArgs) -> Result<String> {
    if let Some(s) = &a.server {
        let s = s.trim_end_matches('/');
        if !(s.starts_with("http://") || s.starts_with("https://")) {
            bail!("--server {s:?} is not an http(s) URL such as http://10.0.0.5:8080");
        }
        return Ok(s.to_string());
    }
    let dest = deploydir::absolute(&a.dest)?;
    Ok(match crate::manifest::Manifest::read(&dest)? {
        Some(settings) => settings.web_url(),
        None => DEFAULT_SERVER.to_string(),
    })
}

/// A request body.
#[derive(Debug, Clone, Copy)]
pub enum Payload<'a> {
    /// JSON.
    Json(&'a Value),
    /// Bytes of a given type (a CSV file).
    Raw {
        /// Its `Content-Type`.
        content_type: &'a str,
        /// The bytes.
        bytes: &'a [u8],
    },
}

/// A bty-web and the credentials for it, found out as needed.
pub struct Api {
    base: String,
    user: String,
    password: Option<String>,
    http: reqwest::Client,
}

impl Api {
    /// The server and credentials `a` names.
    pub fn for_args(a: &ServerArgs) -> Result<Api> {
        Api::new(server_url(a)?, &a.user, a.password_stdin)
    }

    /// bty-web at `base` (an http(s) URL), logging in as `user` with the
    /// password from stdin's first line when `password_stdin`, else
    /// BTY_ADMIN_PASSWORD, else a prompt when bty-web asks.
    pub fn new(base: String, user: &str, password_stdin: bool) -> Result<Api> {
        let password = if password_stdin {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .context("reading the password from stdin")?;
            Some(line.trim_end_matches(['\r', '\n']).to_string())
        } else {
            std::env::var("BTY_ADMIN_PASSWORD")
                .ok()
                .filter(|p| !p.is_empty())
        };
        Ok(Api {
            base: base.trim_end_matches('/').to_string(),
            user: user.to_string(),
            password,
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(30))
                .build()?,
        })
    }

    /// One request; on a 401 without a password yet, ask for one (on a
    /// terminal) and try once more. Errors carry bty-web's own message.
    pub async fn call(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value> {
        let (_, bytes) = self
            .call_with(method, path, body.map(Payload::Json), &[])
            .await?;
        Ok(serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    /// [`Api::call`] with any body, answering the status and the raw
    /// bytes of a success or of one of the `also` statuses (a refusal
    /// whose body the caller reads, such as an import's 422 report).
    pub async fn call_with(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Payload<'_>>,
        also: &[StatusCode],
    ) -> Result<(StatusCode, Vec<u8>)> {
        let url = format!("{}{path}", self.base);
        let asked = self.password.is_none();
        let mut resp = self.send(&method, &url, body).await?;
        if resp.status() == StatusCode::UNAUTHORIZED && asked {
            self.ask_password()?;
            resp = self.send(&method, &url, body).await?;
        }
        let status = resp.status();
        let bytes = resp.bytes().await.unwrap_or_default().to_vec();
        if status.is_success() || also.contains(&status) {
            return Ok((status, bytes));
        }
        Err(self.refusal(status, &String::from_utf8_lossy(&bytes)))
    }

    /// The password, asked on a terminal (there is none: an error that
    /// says how else to give it).
    fn ask_password(&mut self) -> Result<()> {
        if !std::io::stdin().is_terminal() {
            bail!(
                "bty-web at {} wants a login: set BTY_ADMIN_PASSWORD, pass \
                 --password-stdin, or run this on a terminal to be asked",
                self.base
            );
        }
        let prompt = format!("Password of {} at {}", self.user, self.base);
        self.password = Some(dialoguer::Password::new().with_prompt(prompt).interact()?);
        Ok(())
    }

    /// bty-web's answer to a failed request, in its own words.
    fn refusal(&self, status: StatusCode, text: &str) -> anyhow::Error {
        let message = serde_json::from_str::<Value>(text)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or_else(|| text.trim().chars().take(300).collect());
        if status == StatusCode::UNAUTHORIZED {
            return anyhow::anyhow!(
                "bty-web at {} refused the login of {} ({message}); check the password \
                 (BTY_ADMIN_PASSWORD, --password-stdin) and --user",
                self.base,
                self.user
            );
        }
        anyhow::anyhow!(
            "{message} (bty-web at {}: HTTP {})",
            self.base,
            status.as_u16()
        )
    }

    async fn send(
        &self,
        method: &Method,
        url: &str,
        body: Option<Payload<'_>>,
    ) -> Result<reqwest::Response> {
        let mut rb = self.http.request(method.clone(), url);
        if let Some(p) = &self.password {
            rb = rb.basic_auth(&self.user, Some(p));
        }
        match body {
            Some(Payload::Json(b)) => rb = rb.json(b),
            Some(Payload::Raw {
                content_type,
                bytes,
            }) => {
                rb = rb
                    .header(reqwest::header::CONTENT_TYPE, content_type)
                    .body(bytes.to_vec());
            }
            None => {}
        }
        rb.send().await.with_context(|| {
            format!(
                "cannot reach bty-web at {} (is it running, and is that its URL? \
                 --server names it)",
                self.base
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_is_the_flag_then_the_deploy_then_serve_default() {
        let d = tempfile::tempdir().unwrap();
        let args = |server: Option<&str>| ServerArgs {
            server: server.map(str::to_string),
            dest: d.path().to_path_buf(),
            user: "bty-lab".into(),
            password_stdin: false,
        };
        assert_eq!(
            server_url(&args(Some("http://h:9/"))).unwrap(),
            "http://h:9"
        );
        assert!(server_url(&args(Some("h:9"))).is_err());
        assert_eq!(server_url(&args(None)).unwrap(), DEFAULT_SERVER);
        // A manifest as deploy writes it (text, so fields added later with
        // serde defaults do not break this test).
        std::fs::write(
            d.path().join(crate::manifest::FILE),
            format!(
                "version = \"0.1.0\"\ndest = {0:?}\ndata_dir = {0:?}\nhost_addr = \"10.0.0.5\"\n\
                 registry = \"r\"\nimages = \"pull\"\ntftp = true\nsystemd = false\n\
                 [ports]\nweb = 9080\ncache = 3000\ntftp = 69\n",
                d.path().display().to_string()
            ),
        )
        .unwrap();
        assert_eq!(server_url(&args(None)).unwrap(), "http://10.0.0.5:9080");
    }
}
