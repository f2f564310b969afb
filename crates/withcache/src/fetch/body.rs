//! Copying one response body into the generation's temp file: skip the
//! bytes a resent body repeats, buffer, grow the reservation, flush to the
//! file (and tell readers), and judge from how the body ended whether the
//! attempt is complete or must be retried.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::BytesMut;
use futures::StreamExt;
use sha2::Digest;
use tokio::io::AsyncWriteExt;

use super::{Attempt, Generation};
use crate::store::{Download, Store};

/// Buffer this much before writing, so a fast origin costs few syscalls
/// and readers are woken in useful steps.
const WRITE_CHUNK: usize = 1 << 20;
/// When the origin pauses, write what is buffered after this long so
/// readers are not held back by a slow origin.
const FLUSH_IDLE: Duration = Duration::from_millis(20);

/// Copy one response body into the generation's file.
pub(super) async fn pump(
    store: &Store,
    dl: &Download,
    g: &mut Generation,
    resp: reqwest::Response,
    mut skip: u64,
    reserved: &mut u64,
    read_timeout: Duration,
) -> Result<Attempt, String> {
    let mut stream = resp.bytes_stream();
    let mut buf = BytesMut::with_capacity(WRITE_CHUNK);
    let end = loop {
        if dl.cancelled.load(Ordering::Relaxed) {
            return Err("cancelled by the operator".into());
        }
        let wait = if buf.is_empty() {
            read_timeout
        } else {
            FLUSH_IDLE
        };
        let item = match read(&mut stream, wait, !buf.is_empty()).await {
            Read::Chunk(item) => item,
            Read::Idle => {
                flush(dl, g, &mut buf).await?;
                continue;
            }
            Read::End(end) => break end,
        };
        let chunk = past_skip(&item, &mut skip);
        if chunk.is_empty() {
            continue;
        }
        take(store, g, &mut buf, chunk, reserved)?;
        if buf.len() >= WRITE_CHUNK {
            flush(dl, g, &mut buf).await?;
        }
    };
    flush(dl, g, &mut buf).await?;
    Ok(verdict(end, g, skip, read_timeout))
}

/// What waiting `wait` for the next piece of the body brought.
enum Read {
    /// Bytes.
    Chunk(bytes::Bytes),
    /// Nothing yet, with bytes buffered: time to hand them to readers.
    Idle,
    /// The body is over, one way or another.
    End(End),
}

/// Wait up to `wait` for the next piece of the body.
async fn read<S>(stream: &mut S, wait: Duration, buffered: bool) -> Read
where
    S: futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin,
{
    match tokio::time::timeout(wait, stream.next()).await {
        Err(_) if buffered => Read::Idle,
        Err(_) => Read::End(End::Stalled),
        Ok(None) => Read::End(End::Eof),
        // hyper's own words here are "error decoding response body";
        // the counts in `verdict` say more.
        Ok(Some(Err(e))) => Read::End(End::Broke(e.to_string())),
        Ok(Some(Ok(chunk))) => Read::Chunk(chunk),
    }
}

/// The part of `item` past the bytes still to skip (those the generation
/// already has, when the origin resent them).
fn past_skip<'a>(item: &'a [u8], skip: &mut u64) -> &'a [u8] {
    if *skip == 0 {
        return item;
    }
    let n = (*skip as usize).min(item.len());
    *skip -= n as u64;
    item.get(n..).unwrap_or_default()
}

/// Buffer `chunk`, after checking it fits the declared length and the
/// reservation.
fn take(
    store: &Store,
    g: &Generation,
    buf: &mut BytesMut,
    chunk: &[u8],
    reserved: &mut u64,
) -> Result<(), String> {
    store
        .metrics
        .origin_bytes
        .fetch_add(chunk.len() as u64, Ordering::Relaxed);
    let after = g.got + buf.len() as u64 + chunk.len() as u64;
    if let Some(total) = g.total.filter(|total| after > *total) {
        return Err(format!(
            "origin sent more than the {total} bytes it declared"
        ));
    }
    grow_reservation(store, after, reserved)?;
    buf.extend_from_slice(chunk);
    Ok(())
}

/// Unknown length: grow the reservation as bytes arrive, in steps of up
/// to 1 MiB (within the free room, so a step never evicts more than the
/// bytes need).
fn grow_reservation(store: &Store, after: u64, reserved: &mut u64) -> Result<(), String> {
    if after <= *reserved {
        return Ok(());
    }
    let need = after - *reserved;
    let (used, held, max) = store.usage();
    let room = max.map_or(u64::MAX, |m| m.saturating_sub(used + held));
    let more = need.max(room.min(1 << 20));
    store.reserve(more).map_err(|e| e.to_string())?;
    *reserved += more;
    Ok(())
}

/// How the attempt went, from how the body ended.
fn verdict(end: End, g: &Generation, skip: u64, read_timeout: Duration) -> Attempt {
    if skip > 0 {
        return Attempt::Retry("origin ended before reaching the resume point".into());
    }
    match (end, g.total) {
        (End::Stalled, _) => Attempt::Retry(format!("origin stalled for {read_timeout:?}")),
        (End::Eof | End::Broke(_), Some(total)) if g.got < total => Attempt::Retry(format!(
            "the origin declared {total} bytes but closed the connection after {}",
            g.got
        )),
        (End::Broke(e), _) => Attempt::Retry(format!(
            "origin connection broke after {} bytes: {e}",
            g.got
        )),
        (End::Eof, _) => Attempt::Complete,
    }
}

/// How one response body ended.
enum End {
    /// The body ended (possibly short of the declared length).
    Eof,
    /// The connection broke; hyper's reason.
    Broke(String),
    /// Nothing came for the read timeout.
    Stalled,
}

async fn flush(dl: &Download, g: &mut Generation, buf: &mut BytesMut) -> Result<(), String> {
    if buf.is_empty() {
        return Ok(());
    }
    g.file
        .write_all(buf)
        .await
        .map_err(|e| format!("writing {}: {e}", g.path.display()))?;
    // tokio's File completes writes in the background; flush so the bytes
    // are in the file before readers are told they are.
    g.file
        .flush()
        .await
        .map_err(|e| format!("writing {}: {e}", g.path.display()))?;
    g.hasher.update(&buf[..]);
    g.got += buf.len() as u64;
    buf.clear();
    let got = g.got;
    dl.state.send_modify(|s| s.written = got);
    Ok(())
}
