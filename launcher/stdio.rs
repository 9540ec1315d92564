//! Whole-line forwarding of the ranks' stdout and stderr.
//!
//! Each stream is cut into complete lines, and each line reaches the
//! launcher's own stream in one write, so two ranks' output never mixes
//! within a line. With `--tag-output` each line is prefixed by `[rank]`.

use std::io::Write;

/// Longest line kept whole; longer ones are forwarded in pieces of this size.
const MAX_LINE: usize = 1 << 20;

/// Which of the launcher's streams a rank stream goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stream {
    /// Standard output.
    Out,
    /// Standard error.
    Err,
}

/// Line assembler for one rank stream.
#[derive(Debug)]
pub(crate) struct LineBuffer {
    rank: usize,
    stream: Stream,
    tag: bool,
    pending: Vec<u8>,
}

impl LineBuffer {
    /// A buffer for `rank`'s `stream`.
    pub(crate) fn new(rank: usize, stream: Stream, tag: bool) -> Self {
        LineBuffer {
            rank,
            stream,
            tag,
            pending: Vec::new(),
        }
    }

    /// Takes bytes read from the rank and writes out every complete line.
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(nl) = self.pending[start..].iter().position(|&b| b == b'\n') {
            let end = start + nl + 1;
            emit(self.rank, self.stream, self.tag, &self.pending[start..end]);
            start = end;
        }
        while self.pending.len() - start >= MAX_LINE {
            let end = start + MAX_LINE;
            let mut piece = self.pending[start..end].to_vec();
            piece.push(b'\n');
            emit(self.rank, self.stream, self.tag, &piece);
            start = end;
        }
        self.pending.drain(..start);
    }

    /// The stream ended: forward an unterminated last line with a newline.
    pub(crate) fn finish(&mut self) {
        if !self.pending.is_empty() {
            let mut line = std::mem::take(&mut self.pending);
            line.push(b'\n');
            emit(self.rank, self.stream, self.tag, &line);
        }
    }
}

/// Writes one whole line of `rank`'s `stream` (prefixed with `[rank] ` when tagging).
pub(crate) fn emit(rank: usize, stream: Stream, tag: bool, line: &[u8]) {
    let mut buf;
    let bytes = if tag {
        buf = format!("[{rank}] ").into_bytes();
        buf.extend_from_slice(line);
        &buf[..]
    } else {
        line
    };
    // A closed launcher stream (e.g. `| head`) must not kill the job's supervision.
    let _ = match stream {
        Stream::Out => std::io::stdout().lock().write_all(bytes),
        Stream::Err => std::io::stderr().lock().write_all(bytes),
    };
}
