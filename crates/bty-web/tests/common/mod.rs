//! A real bty-web on 127.0.0.1 with a temp state dir, a static catalog and
//! boot artifacts, for the integration tests.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const MAC: &str = "52:54:00:12:34:56";
pub const MAC_HYP: &str = "52-54-00-12-34-56";
pub const SHA: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
pub const KERNEL_BYTES: &[u8] = b"KERNEL-0123456789";

pub struct Server {
    pub base: String,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    pub client: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

pub fn catalog_toml() -> String {
    format!(
        "version = 1\n\
         [[images]]\nname = \"debian-12\"\nsrc = \"https://images.example/debian-12.img.zst\"\nsha256 = \"{SHA}\"\nsize = 1234\n\
         [[images]]\nname = \"alpine\"\nsrc = \"https://images.example/alpine.img.gz\"\n"
    )
}

impl Server {
    /// Start with `extra` TOML appended to a config that sets state_dir and
    /// the catalog (and, unless `extra` has an [admin] section, open mode).
    pub async fn start(extra: &str) -> Server {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, extra).await
    }

    pub async fn start_in(dir: tempfile::TempDir, extra: &str) -> Server {
        let state = dir.path().to_path_buf();
        let cat = state.join("catalog.toml");
        if !cat.exists() {
            std::fs::write(&cat, catalog_toml()).unwrap();
        }
        let boot = state.join("boot");
        std::fs::create_dir_all(&boot).unwrap();
        std::fs::write(boot.join("bty-netboot-x86_64.vmlinuz"), KERNEL_BYTES).unwrap();
        std::fs::write(boot.join("bty-netboot-x86_64.initrd"), b"INITRD").unwrap();
        std::fs::write(boot.join("ipxe.efi"), b"MZ-fake-ipxe-efi").unwrap();
        let toml = format!(
            "[server]\nstate_dir = {:?}\n[images]\ncatalog = {:?}\n{extra}",
            state.display().to_string(),
            cat.display().to_string()
        );
        let config = bty_web::Config::from_toml_str(&toml).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(bty_web::serve(config, listener, async {
            let _ = rx.await;
        }));
        let base = format!("http://{addr}");
        let client = reqwest::Client::new();
        for _ in 0..200 {
            if let Ok(r) = client.get(format!("{base}/healthz")).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        Server {
            base,
            addr,
            dir,
            client,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Stop and return the state dir (to restart on the same database).
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap().unwrap();
        }
        std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap())
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    pub fn url(&self, p: &str) -> String {
        format!("{}{p}", self.base)
    }

    pub async fn get_text(&self, p: &str) -> (u16, String) {
        let r = self.client.get(self.url(p)).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    pub async fn get_json(&self, p: &str) -> (u16, Value) {
        let r = self.client.get(self.url(p)).send().await.unwrap();
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn post_json(&self, p: &str, body: &Value) -> (u16, Value) {
        let r = self
            .client
            .post(self.url(p))
            .json(body)
            .send()
            .await
            .unwrap();
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn put_machine(&self, mac: &str, body: &Value) -> (u16, Value) {
        let r = self
            .client
            .put(self.url(&format!("/api/machines/{mac}")))
            .json(body)
            .send()
            .await
            .unwrap();
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn flash(&self, mac: &str, mode: &str) {
        let (s, v) = self
            .put_machine(
                mac,
                &json!({"boot_mode": mode, "image": "debian-12", "target_disk_serial": "BTYTEST"}),
            )
            .await;
        assert!(s == 200 || s == 201, "{s} {v}");
    }

    pub async fn pxe(&self, mac: &str) -> String {
        let (s, t) = self.get_text(&format!("/pxe/{mac}")).await;
        assert_eq!(s, 200, "{t}");
        t
    }

    pub async fn plan(&self, mac: &str) -> Value {
        let (s, v) = self.get_json(&format!("/pxe/{mac}/plan")).await;
        assert_eq!(s, 200, "{v}");
        v
    }

    pub async fn boot_kernel(&self, mac: &str) {
        let r = self
            .client
            .get(self.url(&format!("/boot/bty-netboot-x86_64.vmlinuz?mac={mac}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().await.unwrap().as_ref(), KERNEL_BYTES);
    }

    pub async fn done(&self, mac: &str, token: &str, ok: bool) -> (u16, Value) {
        let mut body = json!({"token": token, "ok": ok, "duration_s": 1.5});
        if ok {
            body["sha256"] = json!(SHA);
        } else {
            body["reason"] = json!("disk vanished");
        }
        self.post_json(&format!("/pxe/{mac}/done"), &body).await
    }

    pub async fn progress(&self, mac: &str, token: &str, done: u64) -> (u16, Value) {
        self.post_json(
            &format!("/pxe/{mac}/progress"),
            &json!({"token": token, "bytes_done": done, "bytes_total": 1000, "phase": "writing", "rate": 1e6}),
        )
        .await
    }

    pub async fn machine(&self, mac: &str) -> Value {
        let (s, v) = self.get_json(&format!("/api/machines/{mac}")).await;
        assert_eq!(s, 200, "{v}");
        v
    }

    pub async fn events(&self, mac: &str) -> Vec<Value> {
        let (_, v) = self
            .get_json(&format!("/api/events?mac={mac}&limit=500"))
            .await;
        v["events"].as_array().cloned().unwrap_or_default()
    }

    /// A raw HTTP/1.1 request (for headers reqwest will not send).
    pub async fn raw(&self, request: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        let _ =
            tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
    }
}

pub fn is_local(script: &str) -> bool {
    script.contains("sanboot --no-describe") && !script.contains("kernel ")
}

pub fn is_flash(script: &str) -> bool {
    script.contains("kernel http://") && script.contains("flashing")
}

pub fn is_parked(script: &str) -> bool {
    script.contains("is parked") && script.contains("sleep 60")
}
