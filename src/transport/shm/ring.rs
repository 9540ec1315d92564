//! A single-producer/single-consumer byte ring over raw (shared) memory.
//!
//! The classic Lamport ring (cf. crossbeam's array flavour for the
//! cache-padding of indices): the producer owns `tail`, the consumer owns
//! `head`; both are free-running 64-bit byte counters on cache lines of their
//! own, so the two sides never write the same line. The producer copies bytes
//! in, then publishes `tail` with release ordering; the consumer reads `tail`
//! with acquire ordering, copies bytes out, then publishes `head` with
//! release ordering, which the producer reads (acquire) before reusing space.
//! Each side caches the other's counter and re-reads it only when the ring
//! looks full (producer) or empty (consumer), so a busy ring moves about one
//! cache line of control data per batch.
//!
//! The memory may be mapped by an untrusted process of the same user: the
//! counters are validated (`tail - head <= capacity`) before use, so a
//! corrupted ring yields an error, never an out-of-bounds access.
//!
//! Layout of a ring at `base` (all offsets in bytes, `capacity` a power of two):
//! ```text
//!   0..64     tail: AtomicU64 (producer writes)       + padding
//!  64..128    head: AtomicU64 (consumer writes)       + padding
//! 128..       data: [u8; capacity]
//! ```

use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes of control data before the ring's data area.
pub(crate) const CTL_BYTES: usize = 128;

/// The ring's counters are inconsistent: the peer corrupted shared memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Corrupt;

/// Raw view of one ring. Cheap to copy; all access goes through `Producer`/`Consumer`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RingPtr {
    base: *mut u8,
    capacity: usize,
}

impl RingPtr {
    /// Bytes a ring of `capacity` data bytes occupies.
    pub(crate) fn footprint(capacity: usize) -> usize {
        CTL_BYTES + capacity
    }

    /// A ring at `base`.
    ///
    /// # Safety
    /// `base` must be 64-byte aligned and valid for reads and writes of
    /// `footprint(capacity)` bytes for as long as any `Producer`/`Consumer`
    /// made from this value is used; `capacity` must be a power of two; at
    /// most one producer and one consumer may use the ring at a time.
    pub(crate) unsafe fn new(base: *mut u8, capacity: usize) -> Self {
        debug_assert!(capacity.is_power_of_two());
        debug_assert_eq!(base as usize % 64, 0);
        RingPtr { base, capacity }
    }

    fn tail(&self) -> &AtomicU64 {
        // SAFETY: 1. `new`'s contract makes `base..base+8` valid and 8-byte
        // aligned for the ring's lifetime; 2. AtomicU64 has the size and
        // alignment of u64, and all concurrent access to it is atomic.
        unsafe { &*(self.base as *const AtomicU64) }
    }

    fn head(&self) -> &AtomicU64 {
        // SAFETY: as for `tail`, at offset 64 (aligned, within the footprint).
        unsafe { &*(self.base.add(64) as *const AtomicU64) }
    }

    fn data(&self) -> *mut u8 {
        // SAFETY: CTL_BYTES is within the footprint by construction.
        unsafe { self.base.add(CTL_BYTES) }
    }

    /// Copies `src` into the data area at ring position `pos` (wrapping).
    ///
    /// # Safety
    /// The caller owns bytes `pos..pos+src.len()` of the ring (no other side reads them now).
    unsafe fn copy_in(&self, pos: u64, src: &[u8]) {
        let cap = self.capacity;
        let at = (pos as usize) & (cap - 1);
        let first = src.len().min(cap - at);
        // SAFETY: `at + first <= cap` and `src.len() - first <= at`, so both
        // copies stay inside the data area; the caller owns those bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), self.data().add(at), first);
            std::ptr::copy_nonoverlapping(src.as_ptr().add(first), self.data(), src.len() - first);
        }
    }

    /// Copies ring bytes at `pos` into `dst` (wrapping).
    ///
    /// # Safety
    /// The caller owns bytes `pos..pos+dst.len()` of the ring.
    unsafe fn copy_out(&self, pos: u64, dst: &mut [u8]) {
        let cap = self.capacity;
        let at = (pos as usize) & (cap - 1);
        let first = dst.len().min(cap - at);
        // SAFETY: as in `copy_in`, mirrored.
        unsafe {
            std::ptr::copy_nonoverlapping(self.data().add(at), dst.as_mut_ptr(), first);
            std::ptr::copy_nonoverlapping(
                self.data(),
                dst.as_mut_ptr().add(first),
                dst.len() - first,
            );
        }
    }
}

/// The writing end of a ring.
#[derive(Debug)]
pub(crate) struct Producer {
    ring: RingPtr,
    tail: u64,
    head_cache: u64,
}

impl Producer {
    /// Takes the producer role, starting from the ring's current counters.
    pub(crate) fn new(ring: RingPtr) -> Self {
        let tail = ring.tail().load(Ordering::Acquire);
        let head_cache = ring.head().load(Ordering::Acquire);
        Producer {
            ring,
            tail,
            head_cache,
        }
    }

    /// Copies a prefix of the concatenation of `bufs` into the ring and
    /// publishes it; returns the byte count (0 when full).
    pub(crate) fn write(&mut self, bufs: &[&[u8]]) -> Result<usize, Corrupt> {
        let cap = self.ring.capacity as u64;
        let mut free = cap - (self.tail - self.head_cache).min(cap);
        let want: usize = bufs.iter().map(|b| b.len()).sum();
        if (free as usize) < want {
            self.head_cache = self.ring.head().load(Ordering::Acquire);
            // The counters never wrap (2^64 bytes), so the consumer can never be ahead.
            if self.head_cache > self.tail || self.tail - self.head_cache > cap {
                return Err(Corrupt);
            }
            free = cap - (self.tail - self.head_cache);
        }
        let mut written = 0usize;
        for b in bufs {
            let n = b.len().min(free as usize - written);
            if n == 0 {
                break;
            }
            // SAFETY: bytes tail+written .. +n are free (the consumer has
            // released them: head_cache was read with acquire ordering), so
            // only the producer touches them until `tail` is published.
            unsafe { self.ring.copy_in(self.tail + written as u64, &b[..n]) };
            written += n;
        }
        if written > 0 {
            self.tail += written as u64;
            self.ring.tail().store(self.tail, Ordering::Release);
        }
        Ok(written)
    }
}

/// The reading end of a ring.
#[derive(Debug)]
pub(crate) struct Consumer {
    ring: RingPtr,
    head: u64,
    tail_cache: u64,
}

impl Consumer {
    /// Takes the consumer role, starting from the ring's current counters.
    pub(crate) fn new(ring: RingPtr) -> Self {
        let head = ring.head().load(Ordering::Acquire);
        Consumer {
            ring,
            head,
            tail_cache: head,
        }
    }

    /// Bytes ready to read (re-reads the producer's counter when fewer than
    /// `want` are known to be there).
    fn available_for(&mut self, want: usize) -> Result<usize, Corrupt> {
        if self.tail_cache - self.head < want as u64 {
            self.tail_cache = self.ring.tail().load(Ordering::Acquire);
            if self.tail_cache < self.head
                || self.tail_cache - self.head > self.ring.capacity as u64
            {
                return Err(Corrupt);
            }
        }
        Ok((self.tail_cache - self.head) as usize)
    }

    /// Bytes ready to read.
    pub(crate) fn available(&mut self) -> Result<usize, Corrupt> {
        self.available_for(1)
    }

    /// Copies up to `dst.len()` bytes out and releases their space.
    pub(crate) fn read(&mut self, dst: &mut [u8]) -> Result<usize, Corrupt> {
        let avail = self.available_for(dst.len())?;
        let n = avail.min(dst.len());
        if n == 0 {
            return Ok(0);
        }
        // SAFETY: bytes head..head+n were published by the producer (the
        // tail was read with acquire ordering) and are not reused until we
        // publish the new head below.
        unsafe { self.ring.copy_out(self.head, &mut dst[..n]) };
        self.head += n as u64;
        self.ring.head().store(self.head, Ordering::Release);
        Ok(n)
    }
}

/// A ring on heap memory, both ends in one place: for unit tests and the
/// criterion benches (feature `bench-internals`).
#[cfg(any(test, feature = "bench-internals"))]
#[cfg_attr(not(feature = "bench-internals"), allow(unreachable_pub))]
#[derive(Debug)]
pub struct HeapRing {
    _mem: Vec<u64>,
    producer: Producer,
    consumer: Consumer,
}

#[cfg(any(test, feature = "bench-internals"))]
#[cfg_attr(not(feature = "bench-internals"), allow(unreachable_pub))]
impl HeapRing {
    /// A ring of `capacity` bytes (a power of two, at least 64).
    pub fn new(capacity: usize) -> Self {
        assert!(
            capacity.is_power_of_two() && capacity >= 64,
            "capacity must be a power of two >= 64"
        );
        let mut mem = vec![0u64; RingPtr::footprint(capacity).div_ceil(8) + 8];
        let aligned = (mem.as_mut_ptr() as usize + 63) & !63;
        // SAFETY: 1. `mem` is over-allocated by 64 bytes, so the aligned
        // footprint fits; 2. `mem` lives in the same struct as the ends and
        // its heap block never moves; 3. one producer and one consumer.
        let ring = unsafe { RingPtr::new(aligned as *mut u8, capacity) };
        HeapRing {
            _mem: mem,
            producer: Producer::new(ring),
            consumer: Consumer::new(ring),
        }
    }

    /// Writes a prefix of `bytes`; returns how many were taken.
    pub fn push(&mut self, bytes: &[u8]) -> usize {
        self.producer.write(&[bytes]).unwrap_or(0)
    }

    /// Reads up to `out.len()` bytes.
    pub fn pop(&mut self, out: &mut [u8]) -> usize {
        self.consumer.read(out).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heap_ring_round_trip() {
        let mut r = HeapRing::new(128);
        assert_eq!(r.push(&[7u8; 100]), 100);
        assert_eq!(r.push(&[8u8; 100]), 28);
        let mut out = [0u8; 200];
        assert_eq!(r.pop(&mut out), 128);
        assert_eq!(&out[..100], &[7u8; 100]);
        assert_eq!(&out[100..128], &[8u8; 28]);
    }

    /// Heap memory standing in for a shared segment.
    struct Mem(Vec<u64>);
    impl Mem {
        fn new(capacity: usize) -> (Mem, RingPtr) {
            let mut m = Mem(vec![0u64; RingPtr::footprint(capacity).div_ceil(8) + 8]);
            let p = m.0.as_mut_ptr() as usize;
            let aligned = (p + 63) & !63;
            // SAFETY: the Vec outlives every use in the test; aligned to 64 and
            // big enough (we over-allocated by 64 bytes).
            let r = unsafe { RingPtr::new(aligned as *mut u8, capacity) };
            (m, r)
        }
    }
    // SAFETY: the test hands one end to each thread, as the SPSC contract allows.
    unsafe impl Send for RingPtr {}

    #[test]
    fn wraps_and_refuses_when_full() {
        let (_m, r) = Mem::new(64);
        let mut p = Producer::new(r);
        let mut c = Consumer::new(r);
        assert_eq!(p.write(&[&[1u8; 40]]), Ok(40));
        assert_eq!(p.write(&[&[2u8; 40]]), Ok(24));
        assert_eq!(p.write(&[&[3u8; 1]]), Ok(0));
        let mut out = [0u8; 50];
        assert_eq!(c.read(&mut out), Ok(50));
        assert_eq!(&out[..40], &[1u8; 40]);
        assert_eq!(&out[40..], &[2u8; 10]);
        assert_eq!(p.write(&[&[4u8; 30], &[5u8; 30]]), Ok(50));
        let mut out = [0u8; 100];
        assert_eq!(c.read(&mut out), Ok(64));
        assert_eq!(&out[..14], &[2u8; 14]);
        assert_eq!(&out[14..44], &[4u8; 30]);
        assert_eq!(&out[44..64], &[5u8; 20]);
        assert_eq!(c.read(&mut out), Ok(0));
    }

    #[test]
    fn corrupted_counters_are_detected() {
        let (_m, r) = Mem::new(64);
        r.tail().store(1000, Ordering::Release);
        let mut c = Consumer::new(r);
        assert_eq!(c.read(&mut [0u8; 8]), Err(Corrupt));
        let (_m, r) = Mem::new(64);
        let mut p = Producer::new(r);
        r.head().store(u64::MAX - 5, Ordering::Release);
        assert_eq!(p.write(&[&[0u8; 100]]), Err(Corrupt));
    }

    #[test]
    fn two_threads_random_sizes_keep_every_byte_in_order() {
        let (_m, r) = Mem::new(1024);
        let total: u64 = 2_000_000;
        let writer = std::thread::spawn(move || {
            let mut p = Producer::new(r);
            let mut seq = 0u64;
            let mut rng = 0x1234_5678_9abc_def1u64;
            let mut buf = vec![0u8; 700];
            while seq < total {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let n = ((rng % 700) as usize + 1).min((total - seq) as usize);
                for (i, b) in buf[..n].iter_mut().enumerate() {
                    *b = ((seq + i as u64) * 131 % 251) as u8;
                }
                let mut off = 0;
                while off < n {
                    let w = p.write(&[&buf[off..n]]).unwrap();
                    if w == 0 {
                        std::thread::yield_now();
                    }
                    off += w;
                }
                seq += n as u64;
            }
        });
        let mut c = Consumer::new(r);
        let mut seq = 0u64;
        let mut buf = vec![0u8; 333];
        while seq < total {
            let n = c.read(&mut buf).unwrap();
            if n == 0 {
                std::thread::yield_now();
            }
            for (i, &b) in buf[..n].iter().enumerate() {
                assert_eq!(
                    b,
                    ((seq + i as u64) * 131 % 251) as u8,
                    "byte {}",
                    seq + i as u64
                );
            }
            seq += n as u64;
        }
        writer.join().unwrap();
    }
}
