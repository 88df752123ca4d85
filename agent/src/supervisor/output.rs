//! Child output: splitting pipes into lines, the ring of recent lines and the
//! optional sink.
//!
//! Owns every byte read from a child's stdout and stderr. It must never block
//! a reader on the sink (a slow consumer loses sink deliveries, counted, never
//! child progress) and never hold more than the configured bounds in memory.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

/// Appended to a line that was cut at [`OutputLimits::max_line_bytes`].
pub const TRUNCATION_MARKER: &str = " [...line truncated]";

/// Which pipe a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    /// The child's standard output.
    Stdout,
    /// The child's standard error.
    Stderr,
}

/// One line of child output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputLine {
    /// Position in this supervisor's output, over both streams (and, for
    /// [`Supervised`](super::Supervised), over all restarts): strictly
    /// increasing, starting at 0.
    pub seq: u64,
    /// The pipe the line was read from.
    pub stream: Stream,
    /// The line without its `\n` (or `\r\n`); invalid UTF-8 replaced by
    /// U+FFFD; ends with [`TRUNCATION_MARKER`] when `truncated`.
    pub text: String,
    /// The line was longer than [`OutputLimits::max_line_bytes`]; the rest of
    /// it, up to the next newline, was discarded.
    pub truncated: bool,
}

/// Bounds on what is kept of a child's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputLimits {
    /// Most lines kept in the ring of recent lines.
    pub max_lines: usize,
    /// Most bytes of line text kept in the ring (the newest line is always
    /// kept, even if alone it is larger).
    pub max_bytes: usize,
    /// Longest line kept, in bytes; longer lines are cut.
    pub max_line_bytes: usize,
}

impl Default for OutputLimits {
    /// 1,000 lines, 256 KiB, 16 KiB per line: enough context for a failed
    /// task's status and for a crash loop's last messages, small enough for
    /// hundreds of workloads on one node.
    fn default() -> Self {
        Self {
            max_lines: 1_000,
            max_bytes: 256 * 1024,
            max_line_bytes: 16 * 1024,
        }
    }
}

struct Ring {
    lines: VecDeque<OutputLine>,
    bytes: usize,
    next_seq: u64,
    dropped: u64,
    sink: Option<mpsc::Sender<OutputLine>>,
}

/// Shared destination of both readers of one run (or of all runs of a
/// supervised workload).
#[derive(Clone)]
pub(crate) struct OutputLog {
    ring: Arc<Mutex<Ring>>,
    limits: OutputLimits,
}

impl OutputLog {
    pub(crate) fn new(limits: OutputLimits, sink: Option<mpsc::Sender<OutputLine>>) -> Self {
        let ring = Ring {
            lines: VecDeque::new(),
            bytes: 0,
            next_seq: 0,
            dropped: 0,
            sink,
        };
        Self {
            ring: Arc::new(Mutex::new(ring)),
            limits,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Ring> {
        // A panic while holding the lock leaves the ring consistent enough to
        // keep reading output; losing the child's output would be worse.
        self.ring.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Numbers the line, offers it to the sink and keeps it in the ring.
    fn push(&self, stream: Stream, text: String, truncated: bool) {
        let mut ring = self.lock();
        let line = OutputLine {
            seq: ring.next_seq,
            stream,
            text,
            truncated,
        };
        ring.next_seq += 1;
        // Sent under the lock so the sink sees lines in `seq` order.
        if let Some(sink) = &ring.sink {
            match sink.try_send(line.clone()) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => ring.dropped += 1,
                Err(TrySendError::Closed(_)) => ring.sink = None,
            }
        }
        ring.bytes += line.text.len();
        ring.lines.push_back(line);
        while ring.lines.len() > self.limits.max_lines
            || (ring.bytes > self.limits.max_bytes && ring.lines.len() > 1)
        {
            match ring.lines.pop_front() {
                Some(old) => ring.bytes -= old.text.len(),
                None => break,
            }
        }
    }

    /// The lines currently in the ring, oldest first.
    pub(crate) fn recent(&self) -> Vec<OutputLine> {
        self.lock().lines.iter().cloned().collect()
    }

    /// Lines the sink refused because it was full.
    pub(crate) fn dropped(&self) -> u64 {
        self.lock().dropped
    }

    /// Reads `pipe` to end-of-file, pushing each line. Returns on EOF or on a
    /// read error (logged; the pipe is then treated as closed).
    pub(crate) async fn read_pipe(self, stream: Stream, pipe: impl AsyncRead + Unpin) {
        let max = self.limits.max_line_bytes.max(1);
        let mut reader = BufReader::new(pipe);
        let mut pending: Vec<u8> = Vec::new();
        // True while discarding the rest of a line that was already cut.
        let mut skipping = false;
        loop {
            let chunk = match reader.fill_buf().await {
                Ok([]) => break,
                Ok(chunk) => chunk,
                Err(error) => {
                    tracing::warn!(?stream, %error, "reading child output failed");
                    break;
                }
            };
            let (part, newline) = match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => (&chunk[..i], true),
                None => (chunk, false),
            };
            let consumed = part.len() + usize::from(newline);
            if !skipping {
                let room = max.saturating_sub(pending.len());
                pending.extend_from_slice(&part[..part.len().min(room)]);
                if part.len() > room {
                    self.emit(stream, &mut pending, true);
                    skipping = !newline;
                } else if newline {
                    self.emit(stream, &mut pending, false);
                }
            } else if newline {
                skipping = false;
            }
            reader.consume(consumed);
        }
        if !pending.is_empty() {
            self.emit(stream, &mut pending, false);
        }
    }

    fn emit(&self, stream: Stream, pending: &mut Vec<u8>, truncated: bool) {
        if !truncated && pending.last() == Some(&b'\r') {
            pending.pop();
        }
        let mut text = String::from_utf8_lossy(pending).into_owned();
        if truncated {
            text.push_str(TRUNCATION_MARKER);
        }
        pending.clear();
        self.push(stream, text, truncated);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    fn limits(max_lines: usize, max_bytes: usize, max_line_bytes: usize) -> OutputLimits {
        OutputLimits {
            max_lines,
            max_bytes,
            max_line_bytes,
        }
    }

    async fn read(input: &[u8], limits: OutputLimits) -> Vec<OutputLine> {
        let log = OutputLog::new(limits, None);
        log.clone().read_pipe(Stream::Stdout, input).await;
        log.recent()
    }

    fn texts(lines: &[OutputLine]) -> Vec<&str> {
        lines.iter().map(|l| l.text.as_str()).collect()
    }

    #[tokio::test]
    async fn lines_are_split_and_a_final_partial_line_is_kept() {
        let lines = read(b"a\r\nbb\n\nccc", OutputLimits::default()).await;
        assert_eq!(texts(&lines), ["a", "bb", "", "ccc"]);
        assert_eq!(
            lines.iter().map(|l| l.seq).collect::<Vec<_>>(),
            [0, 1, 2, 3]
        );
    }

    #[tokio::test]
    async fn long_line_is_cut_with_marker_and_its_rest_discarded() {
        let lines = read(b"0123456789\nok\n", limits(10, 1000, 4)).await;
        assert_eq!(
            texts(&lines),
            [format!("0123{TRUNCATION_MARKER}").as_str(), "ok"]
        );
        assert!(lines[0].truncated);
        assert!(!lines[1].truncated);
    }

    #[tokio::test]
    async fn invalid_utf8_is_replaced() {
        let lines = read(b"a\xffb\n", OutputLimits::default()).await;
        assert_eq!(texts(&lines), ["a\u{fffd}b"]);
    }

    #[tokio::test]
    async fn ring_keeps_only_the_newest_lines_within_both_bounds() {
        let input: String = (0..100).map(|i| format!("{i:03}\n")).collect();
        let lines = read(input.as_bytes(), limits(10, 1000, 100)).await;
        assert_eq!(lines.len(), 10);
        assert_eq!(lines[0].text, "090");
        let lines = read(input.as_bytes(), limits(1000, 12, 100)).await;
        assert_eq!(texts(&lines), ["096", "097", "098", "099"]);
    }

    #[tokio::test]
    async fn full_sink_counts_dropped_lines_without_blocking() {
        let (tx, mut rx) = mpsc::channel(2);
        let log = OutputLog::new(OutputLimits::default(), Some(tx));
        log.clone()
            .read_pipe(Stream::Stderr, &b"1\n2\n3\n4\n"[..])
            .await;
        assert_eq!(log.dropped(), 2);
        assert_eq!(rx.recv().await.map(|l| l.text), Some("1".to_owned()));
        assert_eq!(log.recent().len(), 4);
    }
}
