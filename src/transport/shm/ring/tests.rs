//! Unit tests of the parent module.

use super::*;

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

/// [`Consumer::take_up_to`] without a limit.
fn take_all(
    c: &mut Consumer,
    take: impl FnMut(&[u8; TAKE_HEAD], RecordBody<'_>) -> bool,
) -> Result<Taken, Corrupt> {
    c.take_up_to(usize::MAX, take)
}

#[test]
fn heap_ring_round_trip() {
    let mut r = HeapRing::new(1024);
    assert_eq!(r.push(&[7u8; 100]), 100);
    assert_eq!(r.push(&[8u8; 100]), 100);
    let mut out = [0u8; 300];
    assert_eq!(r.pop(&mut out), 200);
    assert_eq!(&out[..100], &[7u8; 100]);
    assert_eq!(&out[100..200], &[8u8; 100]);
    assert_eq!(r.pop(&mut out), 0);
}

#[test]
fn records_are_capped_and_space_comes_back() {
    let (_m, r) = Mem::new(1024);
    let mut p = Producer::new(r);
    let mut c = Consumer::new(r);
    // A quarter of the ring, less the record header, per record; the last
    // slot of the ring stays free.
    assert_eq!(p.write(&[&[1u8; 1000]]), Ok(248));
    assert_eq!(p.write(&[&[2u8; 300], &[3u8; 300]]), Ok(248));
    assert_eq!(p.write(&[&[4u8; 248]]), Ok(248));
    assert_eq!(p.write(&[&[5u8; 248]]), Ok(184));
    assert_eq!(p.write(&[&[6u8; 1]]), Ok(0));
    // A record read in pieces releases its space only at its end.
    let mut out = [0u8; 100];
    assert_eq!(c.read(&mut out), Ok(100));
    assert_eq!(p.write(&[&[6u8; 1]]), Ok(0));
    let mut out = [0u8; 400];
    assert_eq!(c.read(&mut out), Ok(400));
    // The second record took its bytes from the first slice only.
    assert!(out[..148].iter().all(|&b| b == 1));
    assert!(out[148..396].iter().all(|&b| b == 2));
    assert!(out[396..].iter().all(|&b| b == 4));
    // Two records are free again: 512 bytes.
    assert_eq!(p.write(&[&[7u8; 300]]), Ok(248));
    let mut rest = vec![0u8; 2000];
    assert_eq!(c.read(&mut rest), Ok(244 + 184 + 248));
    assert!(rest[..244].iter().all(|&b| b == 4));
    assert!(rest[244..428].iter().all(|&b| b == 5));
    assert!(rest[428..676].iter().all(|&b| b == 7));
    assert_eq!(c.read(&mut rest), Ok(0));
}

/// Payloads of one lap of a ring of `cap` bytes, written as records of
/// `len` bytes from position 0: every 8-byte word at a record-slot start
/// reads, one lap later, as a ready header for that slot.
fn forged_lap(cap: usize, len: usize) -> Vec<Vec<u8>> {
    let mut msgs = Vec::new();
    let mut pos = 0u64;
    while pos + footprint_of(len) + RECORD_ALIGN <= cap as u64 {
        let mut msg = vec![0u8; len];
        let mut at = RECORD_ALIGN as usize - RECORD_HEADER;
        while at + 8 <= len {
            let slot = pos + (at + RECORD_HEADER) as u64 + cap as u64;
            let word = u64::from(stamp_at(slot)) << 32 | 8;
            msg[at..at + 8].copy_from_slice(&word.to_ne_bytes());
            at += RECORD_ALIGN as usize;
        }
        msgs.push(msg);
        pos += footprint_of(len);
    }
    msgs
}

#[test]
fn payload_that_looks_like_a_header_is_not_taken_for_one() {
    // A lap of records whose payloads are lookalike headers at every slot,
    // then laps of records of every small size over it: none may find a
    // lookalike after it. Records of a forged lap go whole (one each).
    for forged in [8, 24, 40, 120, 248] {
        for small in 1..=40 {
            let cap = 1024usize;
            let (_m, r) = Mem::new(cap);
            let mut p = Producer::new(r);
            let mut c = Consumer::new(r);
            let mut buf = vec![0u8; 256];
            for msg in forged_lap(cap, forged) {
                assert_eq!(p.write(&[&msg]), Ok(forged));
                assert_eq!(c.read(&mut buf), Ok(forged));
                assert_eq!(&buf[..forged], &msg[..]);
            }
            for i in 0..2 * cap / small {
                let fill = [i as u8; 40];
                // Half of them the way of a small message (`write_line`).
                let n = if i % 2 == 0 {
                    p.write(&[&fill[..small]])
                } else {
                    p.write_line(&fill[..small / 2], &fill[small / 2..small])
                };
                assert_eq!(n, Ok(small));
                assert_eq!(c.read(&mut buf), Ok(small), "{forged}/{small}: record {i}");
                assert_eq!(&buf[..small], &fill[..small]);
                assert_eq!(
                    c.read(&mut buf),
                    Ok(0),
                    "{forged}/{small}: a forged record after {i}"
                );
            }
        }
    }
}

#[test]
fn empty_slices_are_skipped() {
    let (_m, r) = Mem::new(1024);
    let mut p = Producer::new(r);
    let mut c = Consumer::new(r);
    assert_eq!(p.write(&[&[], &[1, 2, 3]]), Ok(3));
    let mut out = [0u8; 8];
    assert_eq!(c.read(&mut out), Ok(3));
    assert_eq!(&out[..3], &[1, 2, 3]);
}

#[test]
fn corrupted_rings_are_detected() {
    // A ready header with an impossible length.
    let (_m, r) = Mem::new(256);
    r.header(0)
        .store(u64::from(stamp_at(0)) << 32 | 4096, Ordering::Release);
    let mut c = Consumer::new(r);
    assert_eq!(c.read(&mut [0u8; 8]), Err(Corrupt));
    // A published head ahead of the producer.
    let (_m, r) = Mem::new(256);
    let mut p = Producer::new(r);
    r.head().store(u64::MAX - 63, Ordering::Release);
    // Three records fit without looking at the head (the last slot stays
    // free); the fourth needs it.
    for _ in 0..3 {
        assert_eq!(p.write(&[&[0u8; 100]]), Ok(56));
    }
    assert_eq!(p.write(&[&[0u8; 100]]), Err(Corrupt));
}

#[test]
fn two_threads_random_sizes_keep_every_byte_in_order() {
    // Both with and without the far node's asking for lines ahead, which
    // reaches past the ring's end (masked back in) and must not change
    // what is read.
    for ahead in [false, true] {
        two_threads_random_sizes(ahead);
    }
}

fn two_threads_random_sizes(ahead: bool) {
    let (_m, r) = Mem::new(1024);
    let total: u64 = 2_000_000;
    let writer = std::thread::spawn(move || {
        let mut p = Producer::new(r);
        p.set_streaming(ahead);
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
                if ahead {
                    // As after hearing from the reader: the lines the
                    // next record takes, asked for before it is written.
                    p.prepare_next(footprint_of(n - off) / RECORD_ALIGN);
                }
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
    c.set_prefetch_ahead(ahead);
    let mut seq = 0u64;
    let mut buf = vec![0u8; 333];
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    while seq < total {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let want = (rng % 333) as usize + 1;
        let n = c.read(&mut buf[..want]).unwrap();
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

#[test]
fn read_records_takes_whole_small_records_only() {
    let (_m, r) = Mem::new(4096);
    let mut p = Producer::new(r);
    let mut c = Consumer::new(r);
    for (len, byte) in [(10usize, 1u8), (20, 2), (300, 3), (5, 4), (30, 5)] {
        assert_eq!(p.write(&[&vec![byte; len]]), Ok(len));
    }
    let mut out = [0u8; 64];
    // Two small records; the third is larger than the limit.
    assert_eq!(c.read_records(&mut out, 96), Ok(30));
    assert_eq!((&out[..10], &out[10..30]), (&[1u8; 10][..], &[2u8; 20][..]));
    assert_eq!(c.read_records(&mut out, 96), Ok(0));
    // Read part of the large one as a stream reader would, then the rest
    // (it fits; nothing more does).
    let mut big = [0u8; 300];
    assert_eq!(c.read(&mut big[..100]), Ok(100));
    assert_eq!(c.read_records(&mut big[100..], 96), Ok(200));
    assert_eq!(big, [3u8; 300]);
    // A record that does not fit in what is left of `dst` waits.
    assert_eq!(c.read_records(&mut out[..20], 96), Ok(5));
    assert_eq!(&out[..5], &[4u8; 5]);
    assert_eq!(c.read_records(&mut out[..20], 96), Ok(0));
    assert_eq!(c.read_records(&mut out, 96), Ok(30));
    // All their space came back: three records of a quarter of the ring
    // fit, and a fourth but for the ring's last slot.
    for _ in 0..3 {
        assert_eq!(p.write(&[&[9u8; 1016]]), Ok(1016));
    }
    assert_eq!(p.write(&[&[9u8; 1016]]), Ok(952));
}

#[test]
fn peek_shows_the_front_record_without_consuming_it() {
    let (_m, r) = Mem::new(4096);
    let mut p = Producer::new(r);
    let mut c = Consumer::new(r);
    let mut head = [0u8; 8];
    assert_eq!(c.peek(&mut head), Ok(0), "nothing published yet");
    let msg: Vec<u8> = (0..100u8).collect();
    assert_eq!(p.write(&[&msg]), Ok(100));
    assert_eq!(p.write(&[&[7u8; 3]]), Ok(3));
    assert_eq!(c.peek(&mut head), Ok(8));
    assert_eq!(head, [0, 1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(
        c.peek(&mut head),
        Ok(8),
        "peeking twice sees the same bytes"
    );
    // Part of the record read: the peek starts at the first unread byte,
    // and never runs into the next record.
    let mut some = [0u8; 95];
    assert_eq!(c.read(&mut some), Ok(95));
    assert_eq!(c.peek(&mut head), Ok(5));
    assert_eq!(head[..5], [95, 96, 97, 98, 99]);
    let mut rest = [0u8; 16];
    assert_eq!(c.read(&mut rest), Ok(8));
    assert_eq!(rest[..8], [95, 96, 97, 98, 99, 7, 7, 7]);
}

#[test]
fn take_up_to_hands_over_whole_records_until_one_is_declined() {
    let (_m, r) = Mem::new(4096);
    let mut p = Producer::new(r);
    let mut c = Consumer::new(r);
    let rec =
        |n: u8, len: usize| -> Vec<u8> { (0..len).map(|i| n.wrapping_add(i as u8)).collect() };
    for (n, len) in [(1u8, 24usize), (2, 100), (3, 10), (4, 40), (5, 600)] {
        assert_eq!(p.write(&[&rec(n, len)]), Ok(len));
    }
    let mut seen = Vec::new();
    // Takes the first two; the third is shorter than a head: it stops there.
    let taken = take_all(&mut c, |head, body| {
        let mut all = head.to_vec();
        let mut rest = vec![0u8; body.len()];
        body.copy_to(&mut rest);
        all.extend_from_slice(&rest);
        seen.push(all);
        true
    });
    // It stopped at a record it left, not at the end of the ring.
    assert_eq!(
        taken,
        Ok(Taken {
            count: 2,
            drained: false
        })
    );
    assert_eq!(seen, vec![rec(1, 24), rec(2, 100)]);
    // The declined record is still there, whole.
    let mut out = [0u8; 10];
    assert_eq!(c.read(&mut out), Ok(10));
    assert_eq!(out.to_vec(), rec(3, 10));
    // A declining closure takes nothing; one that declines records above
    // a size (as the engine declines a message larger than its receive)
    // stops there.
    let count = |t: Result<Taken, Corrupt>| t.map(|t| t.count);
    let up_to_512 = |_: &[u8; TAKE_HEAD], body: RecordBody<'_>| TAKE_HEAD + body.len() <= 512;
    assert_eq!(count(take_all(&mut c, |_, _| false)), Ok(0));
    assert_eq!(count(take_all(&mut c, up_to_512)), Ok(1));
    assert_eq!(take_all(&mut c, up_to_512), Ok(Taken::default()));
    assert_eq!(c.pending(), Ok(600));
    // Partly read: nothing is taken until the record is finished.
    assert_eq!(c.read(&mut out), Ok(10));
    assert_eq!(take_all(&mut c, |_, _| true), Ok(Taken::default()));
    let mut rest = vec![0u8; 590];
    assert_eq!(c.read(&mut rest), Ok(590));
    // Up to the end of the ring: drained, whether it took records or not.
    assert_eq!(
        take_all(&mut c, |_, _| true),
        Ok(Taken {
            count: 0,
            drained: true
        })
    );
    assert_eq!(p.write(&[&rec(6, 30)]), Ok(30));
    assert_eq!(
        take_all(&mut c, |_, _| true),
        Ok(Taken {
            count: 1,
            drained: true
        })
    );
    // Their space came back.
    for _ in 0..3 {
        assert_eq!(p.write(&[&[9u8; 1016]]), Ok(1016));
    }
}

#[test]
fn take_up_to_stops_after_its_count_and_leaves_the_rest() {
    let (_m, r) = Mem::new(4096);
    let mut p = Producer::new(r);
    let mut c = Consumer::new(r);
    for n in 1..=3u8 {
        assert_eq!(p.write(&[&[n; 20]]), Ok(20));
    }
    let mut firsts = Vec::new();
    let mut take = |head: &[u8; TAKE_HEAD], _: RecordBody<'_>| {
        firsts.push(head[0]);
        true
    };
    // One, without looking further (not drained, though more is there).
    assert_eq!(
        c.take_up_to(1, &mut take),
        Ok(Taken {
            count: 1,
            drained: false
        })
    );
    assert_eq!(
        c.take_up_to(usize::MAX, &mut take),
        Ok(Taken {
            count: 2,
            drained: true
        })
    );
    assert_eq!(firsts, vec![1, 2, 3]);
    assert_eq!(
        c.take_up_to(1, |_, _| true),
        Ok(Taken {
            count: 0,
            drained: true
        })
    );
}

#[test]
fn take_up_to_hands_over_records_of_every_size_across_the_ring_end() {
    // Records of 16 bytes up to the largest the ring takes (a quarter of
    // it with its header), laps over, so that heads and bodies straddle the end of the
    // data area: each is handed over whole and in order, one per take when
    // written one at a time, several per take when written in bursts.
    let cap = 4096;
    let (_m, r) = Mem::new(cap);
    let mut p = Producer::new(r);
    let mut c = Consumer::new(r);
    let rec = |n: usize, len: usize| -> Vec<u8> {
        (0..len).map(|i| (n.wrapping_mul(31) ^ i) as u8).collect()
    };
    let max = cap / 4 - RECORD_HEADER;
    let sizes: Vec<usize> = (0..200)
        .map(|n| 16 + (n * 97) % (max - 15))
        .chain([max, 17, max, max - 1])
        .collect();
    let (mut written, mut taken) = (0usize, 0usize);
    while taken < sizes.len() {
        // A burst of one to three records (they fit: the ring is empty).
        let burst = 1 + written % 3;
        for _ in 0..burst {
            let Some(&len) = sizes.get(written) else {
                break;
            };
            assert_eq!(p.write(&[&rec(written, len)]), Ok(len), "record {written}");
            written += 1;
        }
        let t = c
            .take_up_to(usize::MAX, |head, body| {
                let len = sizes[taken];
                let mut all = head.to_vec();
                let mut rest = vec![0u8; body.len()];
                body.copy_to(&mut rest);
                all.extend_from_slice(&rest);
                assert_eq!(all, rec(taken, len), "record {taken}");
                taken += 1;
                true
            })
            .unwrap();
        assert!(t.drained, "every published record was taken");
        assert_eq!(t.count, written - (taken - t.count));
    }
    assert_eq!(written, sizes.len());
}

#[test]
fn write_line_writes_what_write_would() {
    let (_m, r) = Mem::new(1024);
    let mut p = Producer::new(r);
    let mut c = Consumer::new(r);
    let bytes: Vec<u8> = (0..100u8).collect();
    let mut out = [0u8; 128];
    for lap in 0..3 {
        for len in 0..=LINE_RECORD + 1 {
            let split = (len + lap) / 3;
            let (a, b) = (&bytes[..split.min(len)], &bytes[split.min(len)..len]);
            assert_eq!(p.write_line(a, b), Ok(len), "{len} bytes");
            assert_eq!(c.read(&mut out), Ok(len));
            assert_eq!(&out[..len], &bytes[..len]);
        }
    }
    // A full ring takes nothing, and takes again once read.
    let mut n = 0;
    while p.write_line(&bytes[..16], &bytes[16..24]) == Ok(24) {
        n += 1;
    }
    assert_eq!(n, 1024 / 64 - 1, "one slot stays free");
    assert_eq!(c.read_records(&mut [0u8; 2048], 64), Ok(24 * n));
    assert_eq!(p.write_line(&bytes[..16], &bytes[16..24]), Ok(24));
}

/// An answer's record is asked for whole (up to [`ANSWER_PREFETCH_LINES`]
/// lines): a hint that never changes what is read, also where the record
/// wraps at the ring's end; the mark lasts for one record.
#[test]
fn answers_read_the_same_across_the_wrap() {
    let cap = 16 * 1024;
    let (_m, r) = Mem::new(cap);
    let mut p = Producer::new(r);
    let mut c = Consumer::new(r);
    let mut lines = Vec::new();
    for k in 0..40u8 {
        // 3000-byte records: 47 lines, past PREFETCH_LINES, and one of every
        // few straddles the end of the 16 KiB ring.
        let msg: Vec<u8> = (0..3000).map(|i| (i as u8).wrapping_mul(k | 1)).collect();
        assert_eq!(p.write(&[&msg]), Ok(msg.len()));
        c.set_answer(k % 2 == 0);
        let mut out = vec![0u8; msg.len()];
        assert_eq!(c.read(&mut out), Ok(msg.len()));
        assert!(!c.answer, "the mark lasts for one record");
        assert_eq!(out, msg, "record {k}");
        lines.push(c.last_lines());
    }
    assert!(lines.iter().all(|&l| l == 47), "{lines:?}");
}
