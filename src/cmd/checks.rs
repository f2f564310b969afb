//! Checks deploy and upgrade make once the engine answered, before they
//! change anything: DEST is not running on another engine, and the ports
//! the stack publishes are free.

use anyhow::{bail, Result};

use crate::containers;
use crate::engine::{self, ContainerEngine};
use crate::manifest::Manifest;
use crate::ports::{self, Proto};
use crate::{exit, stack, ui};

/// Refuse to deploy DEST on another engine while the one it was deployed on
/// still holds its containers: they would keep running there, holding the
/// ports, and no later command would see them.
pub async fn engine_switch(engine: &impl ContainerEngine, m: &Manifest) -> Result<()> {
    let Some(r) = &m.engine else { return Ok(()) };
    if r.addr == engine.addr() {
        return Ok(());
    }
    let Ok(old) = engine::try_connect(&r.addr).await else {
        ui::warn(format!(
            "{} was deployed on {} at {}, which does not answer; deploying on {} at {} instead",
            m.dest.display(),
            r.kind,
            r.addr,
            engine.kind(),
            engine.addr()
        ));
        return Ok(());
    };
    still_there(&old, engine, m).await
}

/// Refuse when `old` (the engine DEST remembers) holds DEST's containers.
async fn still_there(
    old: &impl ContainerEngine,
    new: &impl ContainerEngine,
    m: &Manifest,
) -> Result<()> {
    let theirs = containers::list_ours(old, m).await?;
    if theirs.is_empty() {
        return Ok(());
    }
    Err(exit::refused(format!(
        "{d} runs on {} at {} ({} container(s) there); deploying it on {} at {} would leave \
         them running. Nothing was changed. Remove them first with `bty-lab purge {d}` \
         (it uses the remembered engine), then deploy with --engine {}.",
        old.kind(),
        old.addr(),
        theirs.len(),
        new.kind(),
        new.addr(),
        new.kind(),
        d = m.dest.display()
    )))
}

/// Ports the stack publishes, with protocol.
pub fn host_ports(m: &Manifest) -> Vec<(u16, Proto, &'static str)> {
    let mut v = vec![
        (m.ports.web, Proto::Tcp, stack::WEB.name),
        (m.ports.cache, Proto::Tcp, stack::CACHE.name),
    ];
    if m.tftp {
        v.push((m.ports.tftp, Proto::Udp, stack::TFTP.name));
    }
    v
}

/// Every port must be free or held by this deploy's own running stack
/// (which is replaced).
pub async fn ports_free(engine: &impl ContainerEngine, m: &Manifest) -> Result<()> {
    let ours = containers::list_ours(engine, m).await?;
    if ours.iter().any(|c| c.state == "running") {
        return Ok(());
    }
    let busy: Vec<String> = host_ports(m)
        .into_iter()
        .filter(|(port, proto, _)| !ports::is_free(*port, *proto))
        .map(|(port, proto, svc)| {
            let who = ports::owner(port, proto)
                .map(|o| format!("held by {o}"))
                .unwrap_or_else(|| "held by a process this user cannot see".into());
            format!("{port}/{proto} (for {svc}) is {who}")
        })
        .collect();
    if !busy.is_empty() {
        bail!(
            "ports in use:\n  {}\nstop what holds them, or choose others with --port-web / \
             --port-cache / --tftp-port",
            busy.join("\n  ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::fake::Fake;
    use crate::engine::Kind;

    #[tokio::test]
    async fn dest_running_on_the_remembered_engine_is_not_moved() {
        let m = crate::manifest::tests::sample();
        let (old, new) = (Fake::new(Kind::Podman), Fake::new(Kind::Docker));
        still_there(&old, &new, &m).await.unwrap();
        let spec = containers::spec(&m, &stack::WEB, "img", "0.1.0", vec![]);
        old.add_container(&m.container(&stack::WEB), spec, "running");
        let e = still_there(&old, &new, &m).await.unwrap_err();
        assert_eq!(exit::code_of(&e), exit::Code::Refused);
        assert!(e.to_string().contains("runs on podman"), "{e}");
        assert!(e.to_string().contains("Nothing was changed"), "{e}");
    }

    #[tokio::test]
    async fn a_held_port_is_named_with_its_owner() {
        let l = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
        let mut m = crate::manifest::tests::sample();
        m.ports.web = l.local_addr().unwrap().port();
        m.ports.cache = 0;
        m.tftp = false;
        let e = ports_free(&Fake::new(Kind::Docker), &m).await.unwrap_err();
        let e = e.to_string();
        assert!(
            e.contains(&format!("{}/tcp (for bty-web)", m.ports.web)),
            "{e}"
        );
        assert!(e.contains(&format!("pid {}", std::process::id())), "{e}");
    }
}
