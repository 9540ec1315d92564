//! Nonblocking requests against a model: random interleavings of posting,
//! `test`, `wait`, `wait_any`, `wait_all` and drop over several requests at
//! once, on a singleton world (messages to self, eager and rendezvous), with
//! every byte of every receive buffer and every outcome checked.
//!
//! Collecting a request twice (a `wait` after a `test` that already
//! returned its outcome) must hand out the same outcome again without
//! touching the runtime, whose request slot may by then serve another
//! request: the test would see that request's data lost or misdelivered.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use courier::{Communicator, Error, Request, Status, ANY_TAG};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

/// Message sizes: empty, small (eager), and above the 64 KiB eager limit
/// towards self (rendezvous).
const SIZES: [usize; 6] = [0, 3, 1000, 9000, 70_000, 150_000];
const TAGS: u32 = 3;

#[derive(Debug, Clone)]
enum Op {
    /// Post a receive with capacity `SIZES[cap]`, on `tag` (None: any tag).
    Recv {
        cap: usize,
        tag: Option<u32>,
    },
    /// Post a send of `SIZES[len]` bytes on `tag`.
    Send {
        len: usize,
        tag: u32,
    },
    Test(usize),
    Wait(usize),
    WaitAny,
    WaitAll(Vec<usize>),
    Drop(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..SIZES.len(), prop::option::weighted(0.8, 0..TAGS))
            .prop_map(|(cap, tag)| Op::Recv { cap, tag }),
        3 => (0..SIZES.len(), 0..TAGS).prop_map(|(len, tag)| Op::Send { len, tag }),
        3 => (0..16usize).prop_map(Op::Test),
        2 => (0..16usize).prop_map(Op::Wait),
        1 => Just(Op::WaitAny),
        1 => prop::collection::vec(0..16usize, 1..4).prop_map(Op::WaitAll),
        1 => (0..16usize).prop_map(Op::Drop),
    ]
}

/// Bytes of the message sent `k`-th in this case.
fn content(case: u64, k: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u64 * 31 + k as u64 * 7 + case * 13) as u8 ^ 0x5a)
        .collect()
}

/// What MPI matching makes of the posted operations (one source: order
/// alone decides, whatever the timing of arrivals).
#[derive(Debug, Default)]
struct Model {
    /// Sends in posting order: (tag, len, matched to receive).
    sends: Vec<(u32, usize, Option<usize>)>,
    /// Receives in posting order: (tag, capacity, outcome).
    recvs: Vec<(Option<u32>, usize, Option<RecvOutcome>)>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum RecvOutcome {
    Got(usize),
    Truncated(usize),
}

impl Model {
    fn post_recv(&mut self, tag: Option<u32>, cap: usize) -> usize {
        let r = self.recvs.len();
        self.recvs.push((tag, cap, None));
        // The first unmatched message that fits the pattern decides.
        if let Some(k) = self
            .sends
            .iter()
            .position(|s| s.2.is_none() && tag.is_none_or(|t| t == s.0))
        {
            let len = self.sends[k].1;
            self.recvs[r].2 = Some(if len > cap {
                RecvOutcome::Truncated(k)
            } else {
                self.sends[k].2 = Some(r);
                RecvOutcome::Got(k)
            });
        }
        r
    }

    fn post_send(&mut self, tag: u32, len: usize) -> usize {
        let k = self.sends.len();
        self.sends.push((tag, len, None));
        for r in 0..self.recvs.len() {
            let (t, cap, out) = self.recvs[r];
            if out.is_some() || t.is_some_and(|t| t != tag) {
                continue;
            }
            if len > cap {
                self.recvs[r].2 = Some(RecvOutcome::Truncated(k));
                continue;
            }
            self.recvs[r].2 = Some(RecvOutcome::Got(k));
            self.sends[k].2 = Some(r);
            break;
        }
        k
    }

    /// Whether waiting on this operation cannot block for ever.
    fn completes(&self, what: Posted) -> bool {
        match what {
            Posted::Recv(r) => self.recvs[r].2.is_some(),
            Posted::Send(k) => self.sends[k].1 <= 65_536 || self.sends[k].2.is_some(),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Posted {
    Recv(usize),
    Send(usize),
}

const SENTINEL: u8 = 0xEE;

fn run_case(w: &Communicator, case: u64, ops: &[Op]) -> Result<(), TestCaseError> {
    let me = w.rank();
    let mut model = Model::default();
    // Buffers sized as the case needs them (memcheck runs this test too):
    // the receives and sends of the case, then the drain's (a drain
    // receive takes a case's message, a drain send at most 3 bytes).
    let op_sends: Vec<usize> = ops
        .iter()
        .filter_map(|o| match o {
            Op::Send { len, .. } => Some(SIZES[*len]),
            _ => None,
        })
        .collect();
    let op_recvs: Vec<usize> = ops
        .iter()
        .filter_map(|o| match o {
            Op::Recv { cap, .. } => Some(SIZES[*cap]),
            _ => None,
        })
        .collect();
    let drain_cap = op_sends.iter().copied().max().unwrap_or(0);
    let recv_caps = op_recvs
        .iter()
        .copied()
        .chain(std::iter::repeat_n(drain_cap, op_sends.len() + 1));
    let mut recv_bufs: Vec<Vec<u8>> = recv_caps.map(|c| vec![SENTINEL; c]).collect();
    let send_lens = op_sends
        .iter()
        .copied()
        .chain(std::iter::repeat_n(3, op_recvs.len() + 1));
    let send_bufs: Vec<Vec<u8>> = send_lens
        .enumerate()
        .map(|(k, len)| content(case, k, len))
        .collect();
    let mut free_recv: Vec<Option<&mut [u8]>> = recv_bufs
        .iter_mut()
        .map(|b| Some(b.as_mut_slice()))
        .collect();
    let check = |model: &Model, what: Posted, outcome: &courier::Result<Status>| {
        match what {
            Posted::Send(_) => {
                let st = outcome.as_ref().map_err(|e| format!("send failed: {e}"))?;
                if !st.is_empty() {
                    return Err(format!("a send's status names a message: {st:?}"));
                }
            }
            Posted::Recv(r) => match (model.recvs[r].2, outcome) {
                (Some(RecvOutcome::Got(k)), Ok(st)) => {
                    let (tag, len, _) = model.sends[k];
                    if (st.source, st.tag, st.bytes) != (me, tag, len) {
                        return Err(format!(
                            "receive {r}: status {st:?}, expected message {k} (tag {tag}, {len} bytes)"
                        ));
                    }
                }
                (
                    Some(RecvOutcome::Truncated(k)),
                    Err(Error::Truncated {
                        rank,
                        tag,
                        capacity,
                        incoming,
                    }),
                ) => {
                    let (t, len, _) = model.sends[k];
                    let cap = model.recvs[r].1;
                    if (*rank, *tag, *capacity, *incoming) != (me, t, cap, len) {
                        return Err(format!("receive {r}: wrong truncation {outcome:?}"));
                    }
                }
                (expected, got) => {
                    return Err(format!("receive {r}: expected {expected:?}, got {got:?}"));
                }
            },
        }
        Ok::<(), String>(())
    };
    let result: Result<(), String> = courier::scope(|s| {
        // Live requests, in the order they were posted.
        let mut live: Vec<(Posted, Request<'_>)> = Vec::new();
        let mut next_recv = 0usize;
        // Posts a receive into the next free buffer (a macro: the request
        // borrows that buffer for the scope's whole lifetime).
        macro_rules! post_recv {
            ($tag:expr, $cap:expr) => {{
                let (tag, cap): (Option<u32>, usize) = ($tag, $cap);
                let buf = free_recv[next_recv].take().expect("a free receive buffer");
                next_recv += 1;
                let (buf, _) = buf.split_at_mut(cap);
                let r = model.post_recv(tag, cap);
                let t = tag.map_or(ANY_TAG, courier::TagMatch::Tag);
                let req = w.irecv(s, buf, me, t).unwrap();
                (Posted::Recv(r), req)
            }};
        }
        for op in ops {
            match op {
                Op::Recv { cap, tag } => {
                    live.push(post_recv!(*tag, SIZES[*cap]));
                }
                Op::Send { len, tag } => {
                    let len = SIZES[*len];
                    let k = model.post_send(*tag, len);
                    let req = w.isend(s, &send_bufs[k][..len], me, *tag).unwrap();
                    live.push((Posted::Send(k), req));
                }
                Op::Test(i) => {
                    if live.is_empty() {
                        continue;
                    }
                    let i = i % live.len();
                    let (what, req) = &mut live[i];
                    let first = req.test();
                    if let Some(o) = &first {
                        if !model.completes(*what) {
                            return Err(format!("{what:?} completed, but cannot have"));
                        }
                        check(&model, *what, o)?;
                        // Collected: every later look gives the same outcome.
                        let again = req.test();
                        check(&model, *what, again.as_ref().expect("test again"))?;
                    }
                }
                Op::Wait(i) => {
                    if live.is_empty() {
                        continue;
                    }
                    let i = i % live.len();
                    if !model.completes(live[i].0) {
                        continue;
                    }
                    let (what, req) = live.remove(i);
                    check(&model, what, &req.wait())?;
                }
                Op::WaitAny => {
                    let unfinished: Vec<usize> = (0..live.len())
                        .filter(|&i| !live[i].1.is_finished())
                        .collect();
                    if unfinished.is_empty()
                        || !unfinished.iter().any(|&i| model.completes(live[i].0))
                    {
                        continue;
                    }
                    let whats: Vec<Posted> = live.iter().map(|x| x.0).collect();
                    let mut reqs: Vec<Request<'_>> = live.drain(..).map(|x| x.1).collect();
                    let (i, outcome) = courier::wait_any(&mut reqs).expect("an unfinished request");
                    if !unfinished.contains(&i) {
                        return Err(format!("wait_any returned finished request {i}"));
                    }
                    check(&model, whats[i], &outcome)?;
                    let mut rest = whats;
                    rest.remove(i);
                    live = rest.into_iter().zip(reqs).collect();
                }
                Op::WaitAll(picks) => {
                    if live.is_empty() {
                        continue;
                    }
                    let mut idx: Vec<usize> = picks.iter().map(|p| p % live.len()).collect();
                    idx.sort_unstable();
                    idx.dedup();
                    if !idx.iter().all(|&i| model.completes(live[i].0)) {
                        continue;
                    }
                    let mut taken = Vec::new();
                    for &i in idx.iter().rev() {
                        taken.push(live.remove(i));
                    }
                    taken.reverse();
                    let whats: Vec<Posted> = taken.iter().map(|x| x.0).collect();
                    let statuses = courier::wait_all(taken.into_iter().map(|x| x.1).collect());
                    match statuses {
                        Ok(sts) => {
                            for (what, st) in whats.iter().zip(sts) {
                                check(&model, *what, &Ok(st))?;
                            }
                        }
                        // A truncated receive among them: each outcome was
                        // collected, and the buffers are checked at the end.
                        Err(Error::Truncated { .. }) => {}
                        Err(e) => return Err(format!("wait_all: {e}")),
                    }
                }
                Op::Drop(i) => {
                    if live.is_empty() {
                        continue;
                    }
                    let i = i % live.len();
                    if model.completes(live[i].0) {
                        drop(live.remove(i));
                    }
                }
            }
        }
        // Drain: give every unmatched receive a message and every
        // unmatched message a receive, then wait for everything.
        loop {
            let open_recv = (0..model.recvs.len()).find(|&r| model.recvs[r].2.is_none());
            let open_send = (0..model.sends.len()).find(|&k| model.sends[k].2.is_none());
            match (open_recv, open_send) {
                (Some(r), _) => {
                    let (tag, cap, _) = model.recvs[r];
                    let tag = tag.unwrap_or(0);
                    let len = cap.min(3);
                    let k = model.post_send(tag, len);
                    let req = w.isend(s, &send_bufs[k][..len], me, tag).unwrap();
                    live.push((Posted::Send(k), req));
                }
                (None, Some(k)) => {
                    let (tag, len, _) = model.sends[k];
                    live.push(post_recv!(Some(tag), len));
                }
                (None, None) => break,
            }
        }
        for (what, req) in live {
            check(&model, what, &req.wait())?;
        }
        Ok(())
    });
    result.map_err(TestCaseError::fail)?;
    // Every receive buffer holds exactly its message (or nothing, if it
    // was truncated), and nothing beyond it was written.
    for (r, (_, cap, out)) in model.recvs.iter().enumerate() {
        let buf = &recv_bufs[r];
        let expect_len = match out {
            Some(RecvOutcome::Got(k)) => {
                let len = model.sends[*k].1;
                prop_assert_eq!(&buf[..len], &content(case, *k, len)[..], "receive {}", r);
                len
            }
            _ => 0,
        };
        prop_assert!(
            buf[expect_len..].iter().all(|&b| b == SENTINEL),
            "receive {} (capacity {}) written beyond its message",
            r,
            cap
        );
    }
    Ok(())
}

#[test]
fn random_interleavings_of_post_test_wait_and_drop_match_the_model() {
    let u = courier::init().unwrap();
    let w = u.world();
    let cases: u32 = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(256);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let case = std::cell::Cell::new(0u64);
    runner
        .run(&prop::collection::vec(op(), 1..24), |ops| {
            case.set(case.get() + 1);
            run_case(&w, case.get(), &ops)
        })
        .unwrap();
    // The runtime holds nothing afterwards: no message and no request left.
    assert!(w.iprobe(courier::ANY_SOURCE, ANY_TAG).unwrap().is_none());
}
