//! Recycled buffers for unexpected eager messages.

/// Buffers for unexpected eager messages, recycled so that a stream of them
/// costs no allocation, zeroing or freeing per message. Bounded in count and
/// bytes.
#[derive(Debug, Default)]
pub(super) struct BufferPool {
    pub(super) free: Vec<Vec<u8>>,
    pub(super) bytes: usize,
}

impl BufferPool {
    pub(super) const MAX_BUFFERS: usize = 256;
    pub(super) const MAX_BYTES: usize = 16 << 20;

    /// A buffer of exactly `len` bytes (contents unspecified but initialized).
    ///
    /// When no free buffer is large enough, every free one is smaller than
    /// what the stream carries now: they are dropped, so the pool fills
    /// with buffers of the new size instead of staying full of the old
    /// ones (after a sweep of small messages, every larger unexpected
    /// message scanned 256 small buffers, allocated a zeroed one and freed
    /// it: `bibw` at 4–16 KiB ran at a third of its speed when the sweep
    /// started at 1 byte rather than at 2 KiB).
    pub(super) fn take(&mut self, len: usize) -> Vec<u8> {
        match self.free.iter().rposition(|b| b.capacity() >= len) {
            Some(i) => {
                let mut b = self.free.swap_remove(i);
                self.bytes -= b.capacity();
                if b.len() >= len {
                    b.truncate(len);
                } else {
                    b.resize(len, 0);
                }
                b
            }
            None => {
                self.free.clear();
                self.bytes = 0;
                vec![0; len]
            }
        }
    }

    /// Takes a buffer back, unless the pool is full.
    pub(super) fn give(&mut self, buf: Vec<u8>) {
        let cap = buf.capacity();
        if cap > 0 && self.free.len() < Self::MAX_BUFFERS && self.bytes + cap <= Self::MAX_BYTES {
            self.bytes += cap;
            self.free.push(buf);
        }
    }
}
