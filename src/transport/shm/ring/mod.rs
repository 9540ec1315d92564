//! A single-producer/single-consumer byte stream over raw (shared) memory,
//! carried in *records* whose readiness lives in the data itself.
//!
//! A classic Lamport ring publishes a `tail` counter next to the data: every
//! message then moves two cache lines between the cores (the data and the
//! counter), and a cache-line transfer is the dominant cost of a small
//! message (`PERFORMANCE.md`: ~90 ns each). Here the producer instead writes
//! each batch of bytes as a record, `{stamp, len}` header then payload, and
//! publishes it by storing the 8-byte header last (release). The consumer
//! polls the header at its read position (acquire): a small message is one
//! cache line, written by one side and read by the other, as in Open MPI's
//! "fast boxes".
//!
//! Records start on 64-byte boundaries of the free-running byte position
//! (a small message is one line; records packed at 16 bytes moved fewer
//! lines for a stream of 1–8-byte messages, 3–5% more of them per second,
//! but a 16–64-byte message then straddled two lines and its latency grew
//! by 15–25%). A header's stamp is derived from its position
//! (`pos / 64 + 1`, low 32 bits), so a header left from the previous lap,
//! or the zeroed memory of a fresh ring, never looks ready. Payload bytes
//! of an earlier lap could (a user's data is arbitrary), but the consumer
//! only ever looks for a header right after the record it finished: so
//! before publishing a record the producer looks at the slot just past it
//! (free space) and overwrites it if it would read as ready. That slot must
//! be free, so the producer never fills the last slot of the ring.
//! (Clearing that slot unconditionally would be simpler, but the consumer
//! may be polling its line: an extra store there made a ping-pong 4×
//! slower. Checking every line start inside each record instead, as this
//! ring once did, cost a scan of every eager payload: 14–19% of `bw` at
//! 16–128 KiB.) The consumer owns `head` (the start of
//! the first record not yet fully read), on a cache line of its own; it
//! publishes `head` (release) when it finishes a record, and the producer
//! re-reads it (acquire) only when the ring looks full, so in steady state
//! the head line never moves. A record may be read in several pieces (the
//! stream reader asks for a header first, say); its space is released when
//! its last byte is read. Records are capped at a quarter of the ring, so
//! large transfers stay pipelined.
//!
//! Where the two cores share no cache, a line the other core last held
//! costs a transfer to write as well as to read, and a store waits for it.
//! So on such a node (the transport says so) each side of a stream asks
//! for lines before it needs them: the writer for the lines a few records
//! ahead (`prefetchw`), the reader for the lines ahead of each record of
//! up to four lines. On any node a rank that has just heard a record asks
//! for the lines at its own tail where its answer will go
//! ([`Producer::prepare_next`]): that pays with shared caches too. These
//! are hints only: what is read and written does not change.
//!
//! The memory may be mapped by an untrusted process of the same user: a
//! ready header's length is validated before use, the published `head` is
//! validated against the producer's position, and every data access is
//! masked into the data area, so a corrupted ring yields an error or garbage
//! bytes (which the frame decoder rejects), never an out-of-bounds access.
//!
//! Layout of a ring at `base` (offsets in bytes, `capacity` a power of two,
//! at least 128):
//! ```text
//!   0..64     head: AtomicU64 (consumer writes) + padding
//!  64..       data: [u8; capacity], records at multiples of 64:
//!             header u64 = stamp << 32 | len, then len bytes (wrapping)
//! ```

use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes of control data before the ring's data area.
pub(crate) const CTL_BYTES: usize = 64;
/// Records start at multiples of this many bytes (a cache line).
const RECORD_ALIGN: u64 = 64;
/// Bytes of a record header.
const RECORD_HEADER: usize = 8;
/// Records of up to this many lines (a message of up to about 550 bytes)
/// are prefetched whole when the reader opens one: its lines come over
/// from the writer's cache while the reader decodes and matches the
/// header, not after. New ÷ old, 2 ranks, interleaved rounds: latency
/// 64–512 B 0.81–0.89 with the vCPUs not sharing caches (6 rounds),
/// 0.93–0.96 sharing them (6–8 rounds, four sittings); `bw` and `bibw`
/// at 128–512 B 0.92–1.07 either way (noise of that size between runs).
/// Larger records are left to the hardware prefetcher inside a stream
/// (the first 8 lines of any record cost `bw` 1–4 KiB 4–9%; every line of
/// every record of up to 8 KiB, `bw` 8 KiB 0.82 and `bibw` 8 KiB 0.72),
/// but see [`ANSWER_PREFETCH_LINES`].
const PREFETCH_LINES: u64 = 9;
/// Records of up to this many lines (a message of up to 8 KiB with its
/// headers) are prefetched whole when they are an answer: the first
/// record the reader opens since its rank last wrote to the writer's (see
/// [`Consumer::set_answer`]), in a ping-pong every one. The lines then
/// all come over from the writer's cache at once rather than as the copy
/// out reaches them. New ÷ old (session 32, 2 ranks, vCPUs sharing
/// caches, 8 interleaved rounds of 100,000 round trips): latency 1 KiB
/// 0.89, 2 KiB 0.90, 4 KiB 0.94, 8 KiB 0.96; `bw`, `bibw` and `mbw_mr`
/// at 1–8 KiB level (6 rounds of 2,000 windows). Every line of every
/// record of up to 8 KiB, answer or not, gained as much latency but made
/// `bw` 8 KiB 0.82 and `bibw` 8 KiB 0.72.
const ANSWER_PREFETCH_LINES: u64 = 130;
/// How far ahead of a stream its two sides ask for the ring's lines, on a
/// node whose cores share no cache (see [`Producer::set_streaming`] and
/// [`Consumer::set_prefetch_ahead`]). There, writing or reading a line the
/// other core last held costs a cross-core transfer. Left to the stores,
/// the writer's store buffer filled with the stores behind one line's, so
/// each small message waited for a whole transfer: 80 ns per 8-byte
/// `isend` in a window, against 26 ns with shared caches and 8–16 ns for
/// a bare ring's writer (`benches/probes/msgrate_floor.c`). Asked for
/// ahead (`prefetchw` by the writer, a prefetch by the reader), the
/// transfers overlap: 31 ns. Against not asking (2 ranks, not sharing
/// caches, 5 interleaved rounds): `bw` 1–32 B 1.71–1.92×, 64–128 B
/// 1.49–1.54×, 256 B 1.25–1.40×, 512 B 1.09×; latency level. Six lines
/// ahead made `bw` 1–32 B 0.89–0.95× of three; two, 64–256 B 0.77–0.91×.
const AHEAD_LINES: u64 = 3;
/// Records of up to this many lines (a 200-byte message with its headers)
/// are followed by the reader's requests (see
/// [`Consumer::set_prefetch_ahead`]). Once a window's receives were
/// posted and collected faster (session 17), the reader kept closer behind
/// the writer, and 2-line records without them lost a quarter of their
/// `bw` on a node not sharing caches. New ÷ the session's start, 8
/// interleaved rounds: up to 2 lines, `bw` 64 B 0.75×, 128 B 1.01×, 256 B
/// 1.02×; up to 8 lines, 0.93×, 1.11×, 0.93× (5-line records lose).
const AHEAD_READ_MAX_LINES: u64 = 4;
/// Only records of up to this many lines (a 2 KiB message with its
/// headers) are followed by the writer's requests, each for as many lines
/// as it took, so that one record's requests follow on from the last's.
/// Against 8 lines (2 ranks, not sharing caches, 6 and 4 interleaved
/// rounds): `bw` 512 B – 2 KiB 1.18–1.26×, `bibw` 1.21–1.34×. A larger
/// record's lines stream in sequence, which the hardware prefetcher
/// follows: asking for all 65 lines of a 4 KiB message's record made `bw`
/// at 4 KiB 0.59× and at 8 KiB 0.76×; asking for only the first 8 lines of
/// any record made it 0.86× at 512 B (the requests no longer followed on).
const AHEAD_MAX_LINES: u64 = 33;

/// The ring's control data is inconsistent: the peer corrupted shared memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Corrupt;

/// Space a record of `len` payload bytes takes in the ring.
fn footprint_of(len: usize) -> u64 {
    (RECORD_HEADER as u64 + len as u64).next_multiple_of(RECORD_ALIGN)
}

/// The stamp of a record starting at byte position `pos`.
fn stamp_at(pos: u64) -> u32 {
    ((pos / RECORD_ALIGN) as u32).wrapping_add(1)
}

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
    /// made from this value is used; `capacity` must be a power of two of at
    /// least 128; at most one producer and one consumer may use the ring at a
    /// time.
    pub(crate) unsafe fn new(base: *mut u8, capacity: usize) -> Self {
        debug_assert!(capacity.is_power_of_two() && capacity >= 128);
        debug_assert_eq!(base as usize % 64, 0);
        RingPtr { base, capacity }
    }

    fn head(&self) -> &AtomicU64 {
        // SAFETY: 1. `new`'s contract makes `base..base+8` valid and 8-byte
        // aligned for the ring's lifetime; 2. AtomicU64 has the size and
        // alignment of u64, and all concurrent access to it is atomic.
        unsafe { &*(self.base as *const AtomicU64) }
    }

    fn data(&self) -> *mut u8 {
        // SAFETY: CTL_BYTES is within the footprint by construction.
        unsafe { self.base.add(CTL_BYTES) }
    }

    /// The header word of the record starting at `pos` (a multiple of 64).
    fn header(&self, pos: u64) -> &AtomicU64 {
        let at = (pos as usize) & (self.capacity - 1);
        debug_assert_eq!(at % RECORD_ALIGN as usize, 0);
        // SAFETY: `at` is a multiple of 64 below `capacity` (masked; the
        // capacity is a power of two >= 128), so the 8 bytes at `data + at`
        // lie in the data area and are 8-byte aligned; both sides access
        // header words only atomically.
        unsafe { &*(self.data().add(at & !(RECORD_ALIGN as usize - 1)) as *const AtomicU64) }
    }

    /// Asks for the `lines` lines from ring position `pos` (a line
    /// boundary): for writing (`prefetchw`: the line arrives exclusive,
    /// so the store that follows need not wait for it) or for reading.
    #[inline]
    fn prefetch_lines(&self, pos: u64, lines: u64, write: bool) {
        for k in 0..lines {
            // Masked into the data area.
            let at = (pos + k * RECORD_ALIGN) as usize & (self.capacity - 1);
            super::prefetch_line(self.data().wrapping_add(at), write);
        }
    }

    /// Copies `src` into the data area at ring position `pos` (wrapping).
    ///
    /// # Safety
    /// The caller owns bytes `pos..pos+src.len()` of the ring (no other side
    /// reads them now), and `src.len() <= capacity`.
    unsafe fn copy_in(&self, pos: u64, src: &[u8]) {
        let cap = self.capacity;
        let at = (pos as usize) & (cap - 1);
        let first = src.len().min(cap - at);
        if first == src.len() {
            // Not wrapping: one copy, inline when small (see `copy_out`).
            // SAFETY: `at + first <= cap` bytes of the data area, which the
            // caller owns (no other side reads them now).
            let dst = unsafe { std::slice::from_raw_parts_mut(self.data().add(at), first) };
            crate::wire::copy_payload(dst, src);
            return;
        }
        // SAFETY: `at + first <= cap` and `src.len() - first <= at`, so both
        // copies stay inside the data area; the caller owns those bytes.
        unsafe {
            crate::sys::copy::copy_nonoverlapping(src.as_ptr(), self.data().add(at), first);
            crate::sys::copy::copy_nonoverlapping(
                src.as_ptr().add(first),
                self.data(),
                src.len() - first,
            );
        }
    }

    /// Copies ring bytes at `pos` into `dst` (wrapping).
    ///
    /// # Safety
    /// The caller owns bytes `pos..pos+dst.len()` of the ring, and
    /// `dst.len() <= capacity`.
    unsafe fn copy_out(&self, pos: u64, dst: &mut [u8]) {
        let cap = self.capacity;
        let at = (pos as usize) & (cap - 1);
        let first = dst.len().min(cap - at);
        if first == dst.len() {
            // Not wrapping (always so for a record within one line): one
            // copy, inline when small (`wire::copy_payload`).
            // SAFETY: as in `copy_in`, mirrored: `at + first <= cap` bytes
            // of the data area, which the caller owns.
            let src = unsafe { std::slice::from_raw_parts(self.data().add(at), first) };
            crate::wire::copy_payload(dst, src);
            return;
        }
        // SAFETY: as in `copy_in`, mirrored.
        unsafe {
            crate::sys::copy::copy_nonoverlapping(self.data().add(at), dst.as_mut_ptr(), first);
            crate::sys::copy::copy_nonoverlapping(
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
    /// Where the next record starts.
    tail: u64,
    head_cache: u64,
    /// Ask for the lines ahead of each record written (see
    /// [`Producer::set_streaming`]).
    streaming: bool,
}

// SAFETY: a `Producer` is the ring's one producer role, not a share of it:
// moving it to another thread moves the role (the ring's words are read and
// written with atomics, its data under the single-producer protocol, from
// whichever thread holds the role), and the mapping outlives it (see
// `RingPtr::new`). It is not `Sync`: two threads never use one role at once.
unsafe impl Send for Producer {}

impl Producer {
    /// Takes the producer role on a ring whose consumer has read everything
    /// written so far (a fresh ring, in practice).
    pub(crate) fn new(ring: RingPtr) -> Self {
        let head = ring.head().load(Ordering::Acquire);
        Producer {
            ring,
            tail: head,
            head_cache: head,
            streaming: false,
        }
    }

    /// Whether the records written from now on are part of a stream (the
    /// writer has not heard from the reader since its last record) on a
    /// node whose cores share no cache: each then asks for the lines the
    /// next records will take, [`AHEAD_LINES`] past its end, so they
    /// arrive while this and the next records are written. Not in a
    /// conversation (a ping-pong): there the reader polls the line after
    /// the record, and the writer leaves it and its neighbours alone.
    #[inline]
    pub(crate) fn set_streaming(&mut self, streaming: bool) {
        self.streaming = streaming;
    }

    /// Asks for the `lines` lines the next record will take, for writing,
    /// before it is ready: when the writer has just heard a record of
    /// `lines` lines from the reader (an answer of that size is likely to
    /// follow). The lines' transfers then overlap with the handling of
    /// what was heard instead of holding up the answer's publication.
    /// Against not asking (2 ranks, 5 interleaved rounds): not sharing
    /// caches, latency 1–32 B 0.82–0.87× (0.29 → 0.24–0.25 µs), 64–512 B
    /// 0.79–0.94×, 1–2 KiB 0.83–0.86×; sharing them (session 19, 6
    /// rounds), 1–128 B 0.73–0.80× (0.092 → 0.067–0.078 µs), 256 B
    /// 0.83×, 512 B – 4 KiB 0.91–0.99×, `bw` level, `bibw` 1–64 B level
    /// and 512 B – 4 KiB 0.89–0.97× (the streams' requests ahead, on the
    /// contrary, made `bw` at 128 B – 4 KiB 0.57–0.94× there). Nothing
    /// after a record of more than [`AHEAD_MAX_LINES`] lines: asking for
    /// all 65 lines of a 4 KiB answer made its latency 1.27×, 32 lines
    /// 1.14×; the first 8, once every write was one record (session 20),
    /// 4 KiB 1.18× and 8 KiB 1.04× of not asking (78 interleaved rounds
    /// sharing caches or nearly, against a copy of the asking build run in
    /// the same rounds; 10 rounds in between and 2 not sharing: level),
    /// and from line 2 on (the reader polls the first), 4 KiB 1.12× (12
    /// rounds).
    #[inline]
    pub(crate) fn prepare_next(&self, lines: u64) {
        if lines <= AHEAD_MAX_LINES {
            self.ring.prefetch_lines(self.tail, lines, true);
        }
    }

    fn free(&self) -> u64 {
        self.ring.capacity as u64 - (self.tail - self.head_cache)
    }

    /// Copies a prefix of the concatenation of `bufs` into the ring as one
    /// record and publishes it; returns the byte count (0 when full).
    pub(crate) fn write(&mut self, bufs: &[&[u8]]) -> Result<usize, Corrupt> {
        let cap = self.ring.capacity;
        let want: usize = bufs.iter().map(|b| b.len()).sum();
        let want = want.min(cap / 4 - RECORD_HEADER);
        if want == 0 {
            return Ok(0);
        }
        if self.free() < footprint_of(want) + RECORD_ALIGN {
            self.refresh_head()?;
        }
        self.write_record(bufs, want)
    }

    /// Writes `head` and `body` as one record: when together they fit one
    /// line ([`LINE_RECORD`] bytes: a small message's frame header and
    /// payload, the usual case), without [`Producer::write`]'s general
    /// bookkeeping; otherwise by it (a prefix when the ring is short of
    /// room). Returns the byte count (0 when full).
    #[inline]
    pub(crate) fn write_line(&mut self, head: &[u8], body: &[u8]) -> Result<usize, Corrupt> {
        let len = head.len() + body.len();
        if len > LINE_RECORD || len == 0 {
            return self.write(&[head, body]);
        }
        if self.free() < 2 * RECORD_ALIGN {
            self.refresh_head()?;
            if self.free() < 2 * RECORD_ALIGN {
                return Ok(0);
            }
        }
        let at = self.tail;
        // SAFETY: the line at..at+64 is free (the consumer released it:
        // head_cache was read with acquire ordering, and two lines are
        // free), so only the producer touches it until the header is
        // published. A record starts on a line boundary, so the line does
        // not wrap, and `len <= LINE_RECORD` keeps both copies in it, after
        // the header word.
        unsafe {
            let line = self.ring.data().add(at as usize & (self.ring.capacity - 1));
            let dst = std::slice::from_raw_parts_mut(line.add(RECORD_HEADER), len);
            let (dst_head, dst_body) = dst.split_at_mut(head.len());
            crate::wire::copy_payload(dst_head, head);
            crate::wire::copy_payload(dst_body, body);
        }
        self.publish_to(at, at + RECORD_ALIGN, len);
        Ok(len)
    }

    /// Re-reads the consumer's published head (validated).
    fn refresh_head(&mut self) -> Result<(), Corrupt> {
        let cap = self.ring.capacity as u64;
        let head = self.ring.head().load(Ordering::Acquire);
        // The counters never wrap (2^64 bytes), so the consumer can never
        // be ahead, nor more than a ring behind.
        if head > self.tail || self.tail - head > cap || head % RECORD_ALIGN != 0 {
            return Err(Corrupt);
        }
        self.head_cache = head;
        Ok(())
    }

    /// Copies a prefix of up to `want` bytes of `bufs` into a record at the
    /// tail and publishes it (the head already refreshed if needed).
    fn write_record(&mut self, bufs: &[&[u8]], want: usize) -> Result<usize, Corrupt> {
        let free = self.free();
        if free < 2 * RECORD_ALIGN {
            return Ok(0);
        }
        // footprint_of(len) + RECORD_ALIGN <= free (multiples of 64).
        let len = want.min((free - RECORD_ALIGN) as usize - RECORD_HEADER);
        let at = self.tail;
        let mut off = 0usize;
        for b in bufs {
            if off == len {
                break;
            }
            let n = b.len().min(len - off);
            // SAFETY: the bytes at..at+footprint_of(len) are free (the
            // consumer released them: head_cache was read with acquire
            // ordering, and footprint_of(len) <= free), so only the
            // producer touches them until the header is published.
            unsafe {
                self.ring
                    .copy_in(at + (RECORD_HEADER + off) as u64, &b[..n])
            };
            off += n;
        }
        self.publish(at, len);
        Ok(len)
    }

    /// Publishes the record of `len` payload bytes written at `at` (the
    /// tail) and moves the tail past it.
    #[inline]
    fn publish(&mut self, at: u64, len: usize) {
        self.publish_to(at, at + footprint_of(len), len);
    }

    /// [`Producer::publish`] of a record that ends at `next` (its
    /// footprint, known to a caller that wrote one line).
    #[inline(always)]
    fn publish_to(&mut self, at: u64, next: u64, len: usize) {
        // The slot the consumer reads after this record: free space (one
        // slot always is), holding whatever an earlier lap left there. If
        // that reads as ready, it is overwritten before the record is
        // published (the consumer reaches it only through this record's
        // header, whose release store orders this one before it).
        let after = self.ring.header(next);
        let stamp = stamp_at(next);
        if (after.load(Ordering::Relaxed) >> 32) as u32 == stamp {
            after.store(u64::from(!stamp) << 32, Ordering::Relaxed);
        }
        let header = u64::from(stamp_at(at)) << 32 | len as u64;
        self.ring.header(at).store(header, Ordering::Release);
        self.tail = next;
        if self.streaming {
            // The lines a next record of this size takes, shifted ahead:
            // one record after another, the asked-for lines follow on.
            let lines = (next - at) / RECORD_ALIGN;
            if lines <= AHEAD_MAX_LINES {
                self.ring
                    .prefetch_lines(next + AHEAD_LINES * RECORD_ALIGN, lines, true);
            }
        }
    }
}

/// The reading end of a ring.
#[derive(Debug)]
pub(crate) struct Consumer {
    ring: RingPtr,
    /// Start of the record being read (or of the next one).
    head: u64,
    /// Payload length of the record being read; 0 when none is open.
    len: usize,
    /// Bytes of it already read.
    off: usize,
    /// Ask for the lines ahead of the stream (see
    /// [`Consumer::set_prefetch_ahead`]).
    ahead: bool,
    /// The last look found a record (the reader is inside a stream).
    busy: bool,
    /// Lines taken by the last record opened (0: none yet).
    last_lines: u64,
    /// The next record opened is an answer (see [`Consumer::set_answer`]).
    answer: bool,
}

// SAFETY: as for `Producer`: the ring's one consumer role, moved whole.
unsafe impl Send for Consumer {}

impl Consumer {
    /// Takes the consumer role on a ring nobody has read yet, in a segment
    /// this rank created (zeroed): its head is 0, known without touching
    /// the ring's memory (a rank adds one ring per local peer at start-up;
    /// reading each head faulted in a page per peer).
    pub(crate) fn fresh(ring: RingPtr) -> Self {
        Consumer {
            ring,
            head: 0,
            len: 0,
            off: 0,
            ahead: false,
            busy: false,
            last_lines: 0,
            answer: false,
        }
    }

    /// Takes the consumer role, starting from the ring's published head.
    #[cfg(any(test, feature = "bench-internals"))]
    pub(crate) fn new(ring: RingPtr) -> Self {
        let head = ring.head().load(Ordering::Acquire) & !(RECORD_ALIGN - 1);
        Consumer {
            head,
            ..Consumer::fresh(ring)
        }
    }

    /// On a node whose cores share no cache: when a record of up to
    /// [`AHEAD_READ_MAX_LINES`] lines follows another without an empty look
    /// between them (a stream of small messages), ask for as many lines
    /// [`AHEAD_LINES`] past it, so their transfer overlaps with the reading
    /// of this one (the next header's position depends on this one's
    /// length, so the reads would otherwise wait for one transfer after
    /// another): `bw` 1–32 B 1.74–1.92× with the writer's requests,
    /// against 1.58–1.67× with those alone. Not after an empty look (a
    /// ping-pong): a line asked for before the writer wrote it moves
    /// twice. Not after larger records: a long message's records come in
    /// a row with nothing written behind them yet.
    pub(crate) fn set_prefetch_ahead(&mut self, ahead: bool) {
        self.ahead = ahead;
    }

    /// Whether the next record opened is an answer: its rank has written to
    /// the writer since it last read from it, so the writer's next record
    /// is likely what the rank now waits for (a ping-pong's every record,
    /// a stream's first). An answer's lines are asked for whole (see
    /// [`ANSWER_PREFETCH_LINES`]); the flag lasts until a record is opened.
    #[inline]
    pub(crate) fn set_answer(&mut self, answer: bool) {
        self.answer = answer;
    }

    /// How many lines the last record opened took (0: none yet).
    #[inline]
    pub(crate) fn last_lines(&self) -> u64 {
        self.last_lines
    }

    /// Opens the next record if none is open; returns the unread bytes of
    /// the open record (0: nothing published yet).
    #[inline]
    fn open(&mut self) -> Result<usize, Corrupt> {
        if self.len == 0 {
            let h = self.ring.header(self.head).load(Ordering::Acquire);
            if (h >> 32) as u32 != stamp_at(self.head) {
                self.busy = false;
                return Ok(0);
            }
            let len = (h & 0xffff_ffff) as usize;
            if len == 0 || len > self.ring.capacity / 4 {
                return Err(Corrupt);
            }
            self.len = len;
            self.off = 0;
            if len <= LINE_RECORD {
                // A small message's line: nothing after it to ask for but,
                // inside a stream, the next message's (what `ask_for_lines`
                // does for one line, without its loops).
                self.last_lines = 1;
                if self.ahead && self.busy {
                    self.ring.prefetch_lines(
                        self.head + (1 + AHEAD_LINES) * RECORD_ALIGN,
                        1,
                        false,
                    );
                }
            } else {
                self.ask_for_lines(footprint_of(len) / RECORD_ALIGN);
            }
            self.answer = false;
            self.busy = true;
        }
        Ok(self.len - self.off)
    }

    /// Asks for the lines of a record of `lines` lines just opened, after
    /// its header's, so that their transfers from the writer's cache
    /// overlap with the work on the header (matching) instead of following
    /// it (a larger record's only when it is an answer: see
    /// [`ANSWER_PREFETCH_LINES`]); on a far node inside a stream, also for
    /// the next record's.
    #[inline(never)]
    fn ask_for_lines(&mut self, lines: u64) {
        self.last_lines = lines;
        if lines <= PREFETCH_LINES || (self.answer && lines <= ANSWER_PREFETCH_LINES) {
            self.ring
                .prefetch_lines(self.head + RECORD_ALIGN, lines - 1, false);
        }
        if self.ahead && self.busy && lines <= AHEAD_READ_MAX_LINES {
            self.ring.prefetch_lines(
                self.head + (lines + AHEAD_LINES) * RECORD_ALIGN,
                lines,
                false,
            );
        }
    }

    /// Unread bytes of the open record, opening the next one if it is
    /// published (0: nothing to read yet). The producer writes each batch
    /// of frames as one record, so this tells a reader how large what
    /// arrived is before it reads any of it.
    pub(crate) fn pending(&mut self) -> Result<usize, Corrupt> {
        self.open()
    }

    /// Copies the first unread bytes of the open record (opening the next
    /// one if it is published) into `dst` without consuming them; returns
    /// how many (0: nothing to read yet).
    pub(crate) fn peek(&mut self, dst: &mut [u8]) -> Result<usize, Corrupt> {
        let n = self.open()?.min(dst.len());
        // SAFETY: as in `read`: the record is published (its header was
        // read with acquire ordering) and ours until we publish a head past
        // it; `n` stays within its validated length.
        unsafe {
            self.ring
                .copy_out(self.head + (RECORD_HEADER + self.off) as u64, &mut dst[..n])
        };
        Ok(n)
    }

    /// Whether a record is open or published (which may turn out corrupt:
    /// `read` says so).
    #[inline]
    pub(crate) fn ready(&self) -> bool {
        self.len != 0
            || (self.ring.header(self.head).load(Ordering::Acquire) >> 32) as u32
                == stamp_at(self.head)
    }

    /// Copies up to `dst.len()` bytes out and releases the space of every
    /// record read to its end.
    pub(crate) fn read(&mut self, dst: &mut [u8]) -> Result<usize, Corrupt> {
        let mut done = 0usize;
        let mut released = false;
        while done < dst.len() {
            let avail = self.open()?;
            if avail == 0 {
                break;
            }
            let n = avail.min(dst.len() - done);
            // SAFETY: the record's payload was published by the producer
            // (its header was read with acquire ordering) and its space is
            // not reused until we publish a head past it; `n` stays within
            // the record's validated length (<= capacity / 4).
            unsafe {
                self.ring.copy_out(
                    self.head + (RECORD_HEADER + self.off) as u64,
                    &mut dst[done..done + n],
                )
            };
            done += n;
            self.off += n;
            if self.off == self.len {
                self.head += footprint_of(self.len);
                self.len = 0;
                self.off = 0;
                released = true;
            }
        }
        if released {
            self.ring.head().store(self.head, Ordering::Release);
        }
        Ok(done)
    }

    /// Takes up to `max` whole records of at least [`TAKE_HEAD`] bytes
    /// from the front, one by one, while `take` accepts them: it sees a
    /// record's first `TAKE_HEAD` bytes (copied out) and the rest in place,
    /// and returns whether it took the record (whose space is then
    /// released); the first record it declines stays, unread. Only
    /// between records (none partly read). Returns how many it took, and
    /// whether it stopped because nothing more was published (once `max`
    /// are taken it does not look further: `drained` stays false). A small
    /// message goes this way from the ring straight to its destination,
    /// with no copy in between.
    pub(crate) fn take_up_to(
        &mut self,
        max: usize,
        mut take: impl FnMut(&[u8; TAKE_HEAD], RecordBody<'_>) -> bool,
    ) -> Result<Taken, Corrupt> {
        let mut taken = Taken::default();
        while taken.count < max {
            let avail = self.open()?;
            if avail < TAKE_HEAD || self.off != 0 {
                taken.drained = avail == 0;
                break;
            }
            let at = (self.head as usize + RECORD_HEADER) & (self.ring.capacity - 1);
            debug_assert!(at % RECORD_ALIGN as usize == RECORD_HEADER);
            // SAFETY: as in `read`: the record is published and ours until
            // we publish a head past it; TAKE_HEAD <= its validated length.
            // Records start on line boundaries, so its first TAKE_HEAD
            // bytes (after the 8-byte header) lie in one line, inside the
            // data area without wrapping (the capacity is a multiple of 64);
            // read as one unaligned load of plain bytes.
            let head: [u8; TAKE_HEAD] = unsafe {
                std::ptr::read_unaligned(self.ring.data().add(at) as *const [u8; TAKE_HEAD])
            };
            let body = RecordBody {
                ring: &self.ring,
                pos: self.head + (RECORD_HEADER + TAKE_HEAD) as u64,
                len: avail - TAKE_HEAD,
            };
            if !take(&head, body) {
                break;
            }
            self.head += footprint_of(self.len);
            self.len = 0;
            taken.count += 1;
        }
        if taken.count > 0 {
            self.ring.head().store(self.head, Ordering::Release);
        }
        Ok(taken)
    }

    /// Copies whole records out, as many as fit in `dst`, stopping before
    /// one of more than `max_record` bytes; releases their space. A reader
    /// that falls behind a stream of small messages takes them all with one
    /// call (the rest of a partly read record first, if it fits).
    pub(crate) fn read_records(
        &mut self,
        dst: &mut [u8],
        max_record: usize,
    ) -> Result<usize, Corrupt> {
        let mut done = 0usize;
        loop {
            let avail = self.open()?;
            if avail == 0 || avail > dst.len() - done || (self.off == 0 && self.len > max_record) {
                break;
            }
            // SAFETY: as in `read`: the record is published and ours until
            // we publish a head past it; `avail` stays within its validated
            // length.
            unsafe {
                self.ring.copy_out(
                    self.head + (RECORD_HEADER + self.off) as u64,
                    &mut dst[done..done + avail],
                )
            };
            done += avail;
            self.head += footprint_of(self.len);
            self.len = 0;
            self.off = 0;
        }
        if done > 0 {
            self.ring.head().store(self.head, Ordering::Release);
        }
        Ok(done)
    }
}

/// The largest record payload that fits in one line with its header.
pub(crate) const LINE_RECORD: usize = RECORD_ALIGN as usize - RECORD_HEADER;

/// What one [`Consumer::take_up_to`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Taken {
    /// Records taken.
    pub(crate) count: usize,
    /// It stopped because no further record was published (not at a
    /// record it left): the ring was empty when it looked.
    pub(crate) drained: bool,
}

/// Bytes of a record that [`Consumer::take_up_to`] shows its caller before
/// the caller decides whether to take the record (a short frame header).
pub(crate) const TAKE_HEAD: usize = 16;

/// The rest of a record being taken by [`Consumer::take_up_to`] (after its
/// first [`TAKE_HEAD`] bytes), to copy where it belongs.
#[derive(Debug)]
pub(crate) struct RecordBody<'a> {
    ring: &'a RingPtr,
    pos: u64,
    len: usize,
}

impl RecordBody<'_> {
    /// Its length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Copies the body (at most `dst.len()` bytes of it) into `dst`.
    pub(crate) fn copy_to(&self, dst: &mut [u8]) {
        let n = self.len.min(dst.len());
        // SAFETY: as in `Consumer::read`: the record is published (its
        // header was read with acquire ordering) and ours until the
        // consumer releases it, which it does only after the caller's
        // closure (holding this body) returned; `pos..pos + n` lies within
        // the record's validated length.
        unsafe { self.ring.copy_out(self.pos, &mut dst[..n]) }
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
    /// A ring of `capacity` bytes (a power of two, at least 128).
    pub fn new(capacity: usize) -> Self {
        assert!(
            capacity.is_power_of_two() && capacity >= 128,
            "capacity must be a power of two >= 128"
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

/// Two rings on heap memory and two threads bouncing a `size`-byte write
/// (at most 8 KiB) through them `rounds` times, spinning between messages:
/// the transport's round trip with nothing around it (criterion bench
/// `ring_pingpong`). Returns the elapsed time of the whole exchange.
#[cfg(feature = "bench-internals")]
pub fn pingpong(size: usize, rounds: u64) -> std::time::Duration {
    two_threads(size, rounds, 1)
}

/// Two threads on heap rings: one streams `messages` writes of `size`
/// bytes (at most 8 KiB) to the other, which answers each window of 64
/// with one write, as `osu_bw` does: the transport's message rate with
/// nothing around it, the floor under `courier bench bw` (criterion bench
/// `ring_stream_message`). Returns the elapsed time.
#[cfg(feature = "bench-internals")]
pub fn stream(size: usize, messages: u64) -> std::time::Duration {
    const WINDOW: u64 = 64;
    two_threads(size, messages.div_ceil(WINDOW), WINDOW)
}

/// `rounds` times: `burst` writes of `size` bytes one way, one back.
#[cfg(feature = "bench-internals")]
fn two_threads(size: usize, rounds: u64, burst: u64) -> std::time::Duration {
    /// The far ends of the two rings, moved to the echo thread.
    struct Ends(RingPtr, RingPtr);
    // SAFETY: the echo thread is the only user of the consumer of the first
    // ring and the producer of the second; this thread uses the other ends.
    unsafe impl Send for Ends {}

    const CAP: usize = 1 << 20;
    let size = size.clamp(1, 8192);
    let alloc = || vec![0u64; RingPtr::footprint(CAP).div_ceil(8) + 8];
    let (mut m1, mut m2) = (alloc(), alloc());
    let at = |m: &mut Vec<u64>| (m.as_mut_ptr() as usize + 63) & !63;
    // SAFETY: 1. each Vec is over-allocated by 64 bytes, so an aligned
    // footprint fits; 2. both Vecs outlive the echo thread (joined below);
    // 3. each ring has one producer and one consumer.
    let (a, b) = unsafe {
        (
            RingPtr::new(at(&mut m1) as *mut u8, CAP),
            RingPtr::new(at(&mut m2) as *mut u8, CAP),
        )
    };
    fn put_all(p: &mut Producer, buf: &[u8]) {
        let mut put = 0;
        while put < buf.len() {
            put += p.write(&[&buf[put..]]).unwrap_or(0);
        }
    }
    fn get_all(c: &mut Consumer, buf: &mut [u8]) {
        let mut got = 0;
        while got < buf.len() {
            if !c.ready() {
                std::hint::spin_loop();
            }
            got += c.read(&mut buf[got..]).unwrap_or(0);
        }
    }
    let ends = Ends(a, b);
    let echo = std::thread::spawn(move || {
        let ends = ends;
        let (mut c, mut p) = (Consumer::new(ends.0), Producer::new(ends.1));
        let mut buf = vec![0u8; size];
        for _ in 0..rounds {
            for _ in 0..burst {
                get_all(&mut c, &mut buf);
            }
            put_all(&mut p, &buf);
        }
    });
    let (mut p, mut c) = (Producer::new(a), Consumer::new(b));
    let mut buf = vec![1u8; size];
    let start = std::time::Instant::now();
    for _ in 0..rounds {
        for _ in 0..burst {
            put_all(&mut p, &buf);
        }
        get_all(&mut c, &mut buf);
    }
    let elapsed = start.elapsed();
    let _ = echo.join();
    drop((m1, m2));
    elapsed
}

#[cfg(test)]
mod tests;
