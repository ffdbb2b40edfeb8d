//! Bounded capture of a child process's output: the first and the last half of the budget are
//! kept, the middle is counted, so a long build log still shows how it started and how it ended.

use std::collections::VecDeque;

use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt};

/// What a stream printed, within a byte budget.
#[derive(Debug, Clone)]
pub struct BoundedOutput {
    head: Vec<u8>,
    tail: VecDeque<u8>,
    head_cap: usize,
    tail_cap: usize,
    total: u64,
}

impl BoundedOutput {
    /// Keeps at most `cap` bytes.
    pub fn new(cap: usize) -> Self {
        let head_cap = cap / 2;
        BoundedOutput {
            head: Vec::new(),
            tail: VecDeque::new(),
            head_cap,
            tail_cap: cap - head_cap,
            total: 0,
        }
    }

    pub fn push(&mut self, mut bytes: &[u8]) {
        self.total += bytes.len() as u64;
        let room = self.head_cap - self.head.len();
        if room > 0 {
            let take = room.min(bytes.len());
            self.head.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
        }
        if self.tail_cap == 0 {
            return;
        }
        if bytes.len() >= self.tail_cap {
            self.tail.clear();
            self.tail
                .extend(bytes[bytes.len() - self.tail_cap..].iter().copied());
            return;
        }
        let overflow = (self.tail.len() + bytes.len()).saturating_sub(self.tail_cap);
        self.tail.drain(..overflow);
        self.tail.extend(bytes.iter().copied());
    }

    /// Bytes printed in all.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Whether bytes were dropped.
    pub fn truncated(&self) -> bool {
        self.total > (self.head.len() + self.tail.len()) as u64
    }

    /// The kept text (invalid UTF-8 replaced), with a marker where bytes were dropped.
    pub fn text(&self) -> String {
        let mut text = String::from_utf8_lossy(&self.head).into_owned();
        let kept = (self.head.len() + self.tail.len()) as u64;
        if self.total > kept {
            text.push_str(&format!(
                "\n[... {} bytes omitted ...]\n",
                self.total - kept
            ));
        }
        let (a, b) = self.tail.as_slices();
        let mut tail = a.to_vec();
        tail.extend_from_slice(b);
        text.push_str(&String::from_utf8_lossy(&tail));
        text
    }

    /// `{ "<name>": text, "<name>_bytes": total, "<name>_truncated": bool }` entries.
    pub fn describe(&self, name: &str, into: &mut serde_json::Map<String, Value>) {
        into.insert(name.to_owned(), json!(self.text()));
        into.insert(format!("{name}_bytes"), json!(self.total));
        into.insert(format!("{name}_truncated"), json!(self.truncated()));
    }
}

/// Reads `reader` to its end into `sink` (shared with whoever reports progress).
pub async fn drain<R: AsyncRead + Unpin>(
    mut reader: R,
    sink: std::sync::Arc<std::sync::Mutex<BoundedOutput>>,
) {
    let mut buf = [0u8; 8192];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if let Ok(mut out) = sink.lock() {
                    out.push(&buf[..n]);
                }
            }
        }
    }
}

/// Reads `reader` to its end, keeping `cap` bytes.
pub async fn collect<R: AsyncRead + Unpin>(mut reader: R, cap: usize) -> BoundedOutput {
    let mut out = BoundedOutput::new(cap);
    let mut buf = [0u8; 8192];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => return out,
            Ok(n) => out.push(&buf[..n]),
        }
    }
}
