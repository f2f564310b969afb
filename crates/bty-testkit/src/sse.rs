//! Reading a `text/event-stream` answer (the live UI streams of both
//! servers and bty-web's `/api/events/stream`) event by event.

use std::time::Duration;

use tokio::time::Instant;

/// One server-sent event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// `event:` (`message` when the frame names none).
    pub name: String,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
}

/// A stream being read; frames without data (keep-alive comments) are
/// skipped.
#[derive(Debug)]
pub struct Reader {
    resp: reqwest::Response,
    buf: String,
    /// Bytes read so far, frames and keep-alives alike.
    pub bytes: usize,
}

impl Reader {
    /// Read `resp`'s body as events.
    pub fn new(resp: reqwest::Response) -> Reader {
        Reader {
            resp,
            buf: String::new(),
            bytes: 0,
        }
    }

    /// The next event, or `None` at the end of the stream or at
    /// `deadline`.
    pub async fn next(&mut self, deadline: Instant) -> Option<Event> {
        loop {
            while let Some(end) = self.buf.find("\n\n") {
                let frame: String = self.buf.drain(..end + 2).collect();
                if let Some(e) = parse(&frame) {
                    return Some(e);
                }
            }
            let chunk = tokio::time::timeout_at(deadline, self.resp.chunk())
                .await
                .ok()?
                .ok()??;
            self.bytes += chunk.len();
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// Read until an event matches `pred` (returned), or `limit` passes.
    pub async fn until(
        &mut self,
        limit: Duration,
        pred: impl Fn(&str, &str) -> bool,
    ) -> Option<Event> {
        let deadline = Instant::now() + limit;
        while let Some(e) = self.next(deadline).await {
            if pred(&e.name, &e.data) {
                return Some(e);
            }
        }
        None
    }

    /// Every event until one matches `stop` (included) or `limit` passes.
    pub async fn collect(
        &mut self,
        limit: Duration,
        mut stop: impl FnMut(&str, &str) -> bool,
    ) -> Vec<Event> {
        let deadline = Instant::now() + limit;
        let mut out = Vec::new();
        while let Some(e) = self.next(deadline).await {
            let done = stop(&e.name, &e.data);
            out.push(e);
            if done {
                break;
            }
        }
        out
    }
}

fn parse(frame: &str) -> Option<Event> {
    let mut name = String::from("message");
    let mut data = Vec::new();
    for line in frame.lines() {
        if let Some(v) = line.strip_prefix("event:") {
            name = v.trim().to_string();
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push(v.strip_prefix(' ').unwrap_or(v).to_string());
        }
    }
    (!data.is_empty()).then(|| Event {
        name,
        data: data.join("\n"),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn frames() {
        let e = super::parse("event: row-a\ndata: <tr>\ndata:x\n\n").unwrap();
        assert_eq!((e.name.as_str(), e.data.as_str()), ("row-a", "<tr>\nx"));
        assert_eq!(super::parse(": keep-alive\n\n"), None);
        assert_eq!(super::parse("data: {}\n\n").unwrap().name, "message");
    }
}
