//! Engine scenarios on a simulated network: N engines joined by FIFO links,
//! frames delivered in a seeded random interleaving (per-link order kept),
//! with user buffers modelled as plain vectors. No I/O, no threads.

use super::copy::coop_split;
use super::matching::{Envelope, Pattern};
use super::*;
use std::collections::HashMap;

/// A tiny deterministic generator (xorshift) so interleavings are reproducible.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Frames in flight on one link, each with its payload bytes.
type Link = VecDeque<(Frame, Vec<u8>)>;

struct SimNet {
    engines: Vec<Engine>,
    /// (from, to) → frames in flight.
    links: HashMap<(u32, u32), Link>,
    send_bufs: HashMap<(u32, ReqId), Vec<u8>>,
    recv_bufs: HashMap<(u32, ReqId), Vec<u8>>,
    /// Advertised "addresses" for single-copy pulls: addr → (sender, request).
    advertised: HashMap<u64, (u32, ReqId)>,
    /// Whether pulls succeed (false: the fallback path is exercised).
    pulls_work: bool,
    /// Whether pushes succeed.
    pushes_work: bool,
    /// Advertised receive buffers for pushes: addr → (receiver, request).
    recv_advertised: HashMap<u64, (u32, ReqId)>,
    /// Each rank's direct-receive buffer.
    direct_bufs: HashMap<u32, Vec<u8>>,
    rng: Rng,
}

impl SimNet {
    fn new(n: u32, eager: usize, seed: u64) -> Self {
        SimNet {
            engines: (0..n).map(|r| Engine::new(r, n, eager)).collect(),
            links: HashMap::new(),
            send_bufs: HashMap::new(),
            recv_bufs: HashMap::new(),
            advertised: HashMap::new(),
            pulls_work: true,
            pushes_work: true,
            recv_advertised: HashMap::new(),
            direct_bufs: HashMap::new(),
            rng: Rng(seed | 1),
        }
    }

    fn send(&mut self, from: u32, to: u32, tag: u32, data: &[u8], sync: bool) -> ReqId {
        let id = self.engines[from as usize].post_send(to, 0, tag, data.len(), sync);
        self.send_bufs.insert((from, id), data.to_vec());
        self.pump(from);
        id
    }

    fn recv(&mut self, at: u32, src: Option<u32>, tag: Option<u32>, cap: usize) -> ReqId {
        let id = self.engines[at as usize].post_recv(0, src, tag, cap);
        self.recv_bufs.insert((at, id), vec![0; cap]);
        self.deliver(at);
        self.pump(at);
        id
    }

    /// Moves an engine's transmits onto links (the payload is written at once).
    fn pump(&mut self, r: u32) {
        while let Some(mut t) = self.engines[r as usize].poll_transmit() {
            let payload = match t.payload {
                Payload::None => Vec::new(),
                Payload::Advertise(id) => {
                    let addr = 0x1000 + self.advertised.len() as u64;
                    self.advertised.insert(addr, (r, id));
                    if let Frame::Rts { addr: a, .. } = &mut t.frame {
                        *a = addr;
                    }
                    Vec::new()
                }
                Payload::AdvertiseRecv(id) => {
                    let addr = 0x10_0000 + self.recv_advertised.len() as u64;
                    self.recv_advertised.insert(addr, (r, id));
                    if let Frame::CtsCoop { addr: a, .. } = &mut t.frame {
                        *a = addr;
                    }
                    Vec::new()
                }
                Payload::Send(id) => {
                    let p = self.send_bufs[&(r, id)].clone();
                    self.engines[r as usize].handle_written(id);
                    p
                }
            };
            self.links
                .entry((r, t.peer))
                .or_default()
                .push_back((t.frame, payload));
        }
    }

    fn deliver(&mut self, r: u32) {
        while let Some((id, data)) = self.engines[r as usize].poll_delivery() {
            self.recv_bufs.get_mut(&(r, id)).unwrap()[..data.len()].copy_from_slice(&data);
        }
        while let Some(part) = self.engines[r as usize].poll_copy() {
            let ok = match part.dir {
                Direction::Push => {
                    if self.pushes_work {
                        let (to, rid) = self.recv_advertised[&part.addr];
                        assert_eq!(to, part.peer);
                        let range = part.offset..part.offset + part.len;
                        let bytes = self.send_bufs[&(r, part.req)][range.clone()].to_vec();
                        self.recv_bufs.get_mut(&(to, rid)).unwrap()[range].copy_from_slice(&bytes);
                    }
                    self.pushes_work
                }
                Direction::Pull => {
                    if self.pulls_work {
                        let (from, sid) = self.advertised[&part.addr];
                        assert_eq!(from, part.peer);
                        let range = part.offset..part.offset + part.len;
                        let data = self.send_bufs[&(from, sid)][range.clone()].to_vec();
                        self.recv_bufs.get_mut(&(r, part.req)).unwrap()[range]
                            .copy_from_slice(&data);
                    }
                    self.pulls_work
                }
            };
            self.engines[r as usize].handle_copy_done(part, ok);
        }
    }

    /// Delivers one frame from a random non-empty link. Returns false when idle.
    fn step(&mut self) -> bool {
        let mut keys: Vec<_> = self
            .links
            .iter()
            .filter(|(_, q)| !q.is_empty())
            .map(|(k, _)| *k)
            .collect();
        if keys.is_empty() {
            return false;
        }
        keys.sort();
        let (from, to) = keys[self.rng.below(keys.len())];
        let (frame, payload) = self
            .links
            .get_mut(&(from, to))
            .unwrap()
            .pop_front()
            .unwrap();
        let e = &mut self.engines[to as usize];
        if matches!(frame, Frame::Eager { .. }) && self.rng.below(2) == 0 {
            // As the driver does when the payload came with the header.
            match e
                .handle_eager_whole(from, frame, &payload)
                .expect("valid frame")
            {
                Some(Dest::Req(id)) => self.recv_bufs.get_mut(&(to, id)).unwrap()[..payload.len()]
                    .copy_from_slice(&payload),
                Some(Dest::Direct) => self.direct_bufs.get_mut(&to).unwrap()[..payload.len()]
                    .copy_from_slice(&payload),
                Some(Dest::Staging) => panic!("a whole payload is never staged"),
                None => {}
            }
            self.deliver(to);
            self.pump(to);
            return true;
        }
        match e.handle_frame(from, frame).expect("valid frame") {
            Some(Dest::Req(id)) => {
                self.recv_bufs.get_mut(&(to, id)).unwrap()[..payload.len()]
                    .copy_from_slice(&payload);
                e.handle_payload_done(from);
            }
            Some(Dest::Staging) => {
                e.staging_mut(from).unwrap().copy_from_slice(&payload);
                e.handle_payload_done(from);
            }
            Some(Dest::Direct) => {
                self.direct_bufs.get_mut(&to).unwrap()[..payload.len()].copy_from_slice(&payload);
                e.handle_payload_done(from);
            }
            None => assert!(payload.is_empty()),
        }
        self.deliver(to);
        self.pump(to);
        true
    }

    fn run(&mut self) {
        while self.step() {}
    }

    fn done(&self, r: u32, id: ReqId) -> bool {
        self.engines[r as usize].is_done(id)
    }

    /// A blocking receive as the driver makes it: direct when the engine
    /// allows, an ordinary receive otherwise or when it falls back. Frames
    /// are delivered until the direct receive finishes (then the rest).
    fn recv_blocking(
        &mut self,
        at: u32,
        src: Option<u32>,
        tag: Option<u32>,
        cap: usize,
    ) -> (bool, Result<(MsgInfo, Vec<u8>), ReqError>) {
        match self.engines[at as usize].begin_direct(0, src, tag, cap) {
            DirectStart::Waiting => {}
            DirectStart::Queued(info, data) => {
                self.pump(at);
                return (true, Ok((info, data)));
            }
            DirectStart::Truncated(e) => return (true, Err(e)),
            DirectStart::Ordinary => {
                let id = self.recv(at, src, tag, cap);
                self.run();
                return (false, self.take_recv(at, id));
            }
        }
        {
            self.direct_bufs.insert(at, vec![0; cap]);
            while !self.engines[at as usize].direct_finished() && self.step() {}
            let outcome = self.engines[at as usize].end_direct();
            let buf = self.direct_bufs.remove(&at).unwrap();
            self.pump(at);
            match outcome {
                DirectOutcome::Done(r) => {
                    return (true, r.map(|info| (info, buf[..info.len].to_vec())))
                }
                DirectOutcome::Fallback => {}
                DirectOutcome::Cancelled { .. } => panic!("the network went idle first"),
            }
        }
        let id = self.recv(at, src, tag, cap);
        self.run();
        (false, self.take_recv(at, id))
    }

    fn take_recv(&mut self, r: u32, id: ReqId) -> Result<(MsgInfo, Vec<u8>), ReqError> {
        let res = self.engines[r as usize].take_result(id).expect("finished");
        let buf = self.recv_bufs.remove(&(r, id)).unwrap();
        res.map(|info| (info, buf[..info.len].to_vec()))
    }
}

/// A plain eager frame on context 0, as a sender of `len` bytes with `tag`
/// writes it.
fn plain_eager(tag: u32, len: u64) -> Frame {
    Frame::Eager {
        context: 0,
        tag,
        len,
        sync: false,
        sreq: 0,
    }
}

/// The frames an engine has queued for transmission, taken.
fn transmitted(e: &mut Engine) -> Vec<Frame> {
    std::iter::from_fn(|| e.poll_transmit())
        .map(|t| t.frame)
        .collect()
}

fn bytes(seed: usize, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + seed * 13) as u8).collect()
}

#[test]
fn eager_expected_and_unexpected() {
    let mut net = SimNet::new(2, 64, 1);
    // Expected: receive posted first.
    let r = net.recv(1, Some(0), Some(5), 10);
    net.send(0, 1, 5, b"hello", false);
    net.run();
    let (info, data) = net.take_recv(1, r).unwrap();
    assert_eq!(
        (info.source, info.tag, info.len, &data[..]),
        (0, 5, 5, &b"hello"[..])
    );
    // Unexpected: message first, then the receive copies it out.
    net.send(0, 1, 6, b"world!", false);
    net.run();
    assert_eq!(net.engines[1].probe(0, None, None).map(|i| i.len), Some(6));
    let r = net.recv(1, None, None, 10);
    let (_, data) = net.take_recv(1, r).unwrap();
    assert_eq!(data, b"world!");
}

#[test]
fn rendezvous_both_orders() {
    for recv_first in [true, false] {
        let mut net = SimNet::new(2, 16, 2);
        let msg = bytes(3, 1000);
        let r = if recv_first {
            Some(net.recv(1, Some(0), Some(1), 1000))
        } else {
            None
        };
        let s = net.send(0, 1, 1, &msg, false);
        net.run();
        assert!(
            !net.done(0, s) || recv_first,
            "a rendezvous send cannot finish before a match"
        );
        let r = r.unwrap_or_else(|| net.recv(1, Some(0), Some(1), 2000));
        net.run();
        assert!(net.done(0, s));
        let (info, data) = net.take_recv(1, r).unwrap();
        assert_eq!((info.len, data), (1000, msg));
        assert_eq!(
            net.engines[1].stats().unexpected_arrivals,
            u64::from(!recv_first)
        );
    }
}

#[test]
fn single_copy_pull_and_its_fallback() {
    for pulls_work in [true, false] {
        for recv_first in [true, false] {
            let mut net = SimNet::new(2, 16, 9);
            net.pulls_work = pulls_work;
            net.engines[0].set_peer_caps(1, 16, true);
            let msg = bytes(5, 5000);
            let r = recv_first.then(|| net.recv(1, Some(0), Some(3), 5000));
            let s = net.send(0, 1, 3, &msg, false);
            net.run();
            let r = r.unwrap_or_else(|| net.recv(1, Some(0), Some(3), 5000));
            net.run();
            assert!(net.done(0, s), "pulls_work={pulls_work}");
            assert_eq!(net.take_recv(1, r).unwrap().1, msg);
            assert_eq!(net.advertised.len(), 1);
        }
    }
}

#[test]
fn an_exchange_moves_rendezvous_data_through_the_link_not_a_pull() {
    // A lone large message offers a pull. One sent while a receive from
    // the peer is posted (an exchange), or while another send to it is in
    // flight (a stream), goes RTS, CTS, DATA through the link, up to the
    // exchange limit.
    for (case, len, pulled) in [
        ("lone", 5000, 1),
        ("exchange", 5000, 0),
        ("exchange", 9000, 1),
        ("stream", 5000, 1),
    ] {
        let mut net = SimNet::new(2, 16, 13);
        net.engines[0].set_peer_caps(1, 16, true);
        net.engines[0].set_exchange_limit(1, 8000);
        let _back = (case == "exchange").then(|| net.recv(0, Some(1), Some(2), 16));
        let first = (case == "stream").then(|| {
            let r = net.recv(1, Some(0), Some(3), 5000);
            (r, net.send(0, 1, 3, &bytes(1, 5000), false))
        });
        let msg = bytes(9, len);
        let r = net.recv(1, Some(0), Some(3), len);
        let s = net.send(0, 1, 3, &msg, false);
        net.run();
        assert!(net.done(0, s), "{case} {len}");
        assert_eq!(net.take_recv(1, r).unwrap().1, msg, "{case} {len}");
        if let Some((r, s)) = first {
            assert!(net.done(0, s));
            assert_eq!(net.take_recv(1, r).unwrap().1, bytes(1, 5000));
        }
        assert_eq!(net.advertised.len(), pulled, "{case} {len}: pulls offered");
    }
}

#[test]
fn cooperative_copy_and_its_fallbacks() {
    let cases = [(true, true), (true, false), (false, true), (false, false)];
    for ((pulls_work, pushes_work), share) in
        cases.into_iter().flat_map(|c| [(c, 10), (c, 60), (c, 95)])
    {
        for recv_first in [true, false] {
            let mut net = SimNet::new(2, 16, 11);
            net.pulls_work = pulls_work;
            net.pushes_work = pushes_work;
            for e in &mut net.engines {
                e.set_coop_min(8192);
            }
            // The receiver decides the split; the sender's own setting
            // does not matter.
            net.engines[0].set_coop_share(50);
            net.engines[1].set_coop_share(share);
            net.engines[0].set_peer_caps(1, 16, true);
            let msg = bytes(7, 100_000);
            let r = recv_first.then(|| net.recv(1, Some(0), Some(4), 100_000));
            let s = net.send(0, 1, 4, &msg, false);
            net.run();
            let r = r.unwrap_or_else(|| net.recv(1, Some(0), Some(4), 100_000));
            net.run();
            let case = format!(
                "pulls_work={pulls_work} pushes_work={pushes_work} recv_first={recv_first} share={share}"
            );
            assert!(net.done(0, s), "{case}");
            assert_eq!(net.take_recv(1, r).unwrap().1, msg, "{case}");
            assert_eq!(net.recv_advertised.len(), 1, "{case}: one CTS_COOP");
        }
    }
    assert_eq!(coop_split(20_000, 50), 8192);
    assert_eq!(coop_split(40_000, 60), 20_480);
    assert_eq!(coop_split(4096, 50), 0);
    assert_eq!(coop_split(8192, 99), 4096);
    assert_eq!(
        coop_split(4100, 99),
        0,
        "the receiver's part would be empty"
    );
    assert_eq!(coop_split(1 << 20, 60), 626_688);
}

/// A receive whose address went out in a CTS_COOP names the sender as a
/// possible writer into its buffer until PUSHED arrives, and only then: the
/// driver keeps such a buffer alive even when the request is abandoned.
#[test]
fn a_cooperative_receive_names_its_remote_writer_until_pushed() {
    for pushes_work in [true, false] {
        let mut net = SimNet::new(2, 16, 12);
        net.pushes_work = pushes_work;
        for e in &mut net.engines {
            e.set_coop_min(8192);
        }
        net.engines[0].set_peer_caps(1, 16, true);
        let msg = bytes(8, 100_000);
        let r = net.recv(1, Some(0), Some(4), 100_000);
        assert_eq!(net.engines[1].remote_writer(r), None, "nothing matched yet");
        let s = net.send(0, 1, 4, &msg, false);
        // Deliver the RTS only: the receiver pulls its part and sends CTS_COOP.
        assert!(net.step());
        assert_eq!(net.engines[1].remote_writer(r), Some(0), "CTS_COOP sent");
        assert!(!net.done(1, r));
        // The sender handles CTS_COOP and pushes; PUSHED is in flight.
        assert!(net.step());
        assert_eq!(net.engines[1].remote_writer(r), Some(0), "PUSHED in flight");
        net.run();
        assert_eq!(net.engines[1].remote_writer(r), None, "PUSHED arrived");
        assert!(net.done(0, s));
        assert_eq!(net.take_recv(1, r).unwrap().1, msg);
        // A plain (non-cooperative) pull never has a remote writer.
        let small = bytes(9, 5000);
        let r = net.recv(1, Some(0), Some(5), 5000);
        net.send(0, 1, 5, &small, false);
        assert!(net.step());
        assert_eq!(net.engines[1].remote_writer(r), None);
        net.run();
        assert_eq!(net.take_recv(1, r).unwrap().1, small);
    }
}

#[test]
fn truncation_fails_the_receive_and_keeps_the_message() {
    for len in [40usize, 400] {
        let mut net = SimNet::new(2, 100, 3);
        let msg = bytes(1, len);
        net.send(0, 1, 9, &msg, false);
        net.run();
        let small = net.recv(1, Some(0), Some(9), 8);
        assert_eq!(
            net.take_recv(1, small).unwrap_err(),
            ReqError::Truncated {
                source: 0,
                tag: 9,
                capacity: 8,
                incoming: len
            }
        );
        let big = net.recv(1, Some(0), Some(9), len);
        net.run();
        assert_eq!(net.take_recv(1, big).unwrap().1, msg);
    }
    // A posted receive that is too small is failed; the next posted one gets the message.
    let mut net = SimNet::new(2, 100, 4);
    let a = net.recv(1, None, None, 2);
    let b = net.recv(1, None, None, 50);
    net.send(0, 1, 1, &bytes(2, 30), false);
    net.run();
    assert!(matches!(
        net.take_recv(1, a),
        Err(ReqError::Truncated { .. })
    ));
    assert_eq!(net.take_recv(1, b).unwrap().1, bytes(2, 30));
}

/// Ranks 0 and 1 each send the same mixed lengths (eager and rendezvous)
/// to rank 2 on tag 7; `take` receives one message at rank 2 (any source,
/// tag 7), and every message must be the next one from its sender,
/// whatever the interleaving of the links. Returns the network after.
fn non_overtaking_scenario(
    seed: u64,
    mut take: impl FnMut(&mut SimNet) -> (MsgInfo, Vec<u8>),
) -> SimNet {
    let mut net = SimNet::new(3, 32, seed);
    let lens = [0usize, 5, 100, 31, 33, 1, 64, 2000, 3];
    for (k, &len) in lens.iter().enumerate() {
        net.send(0, 2, 7, &bytes(k, len), false);
        net.send(1, 2, 7, &bytes(100 + k, len), false);
    }
    let mut next = [0usize; 2];
    for _ in 0..2 * lens.len() {
        let (info, data) = take(&mut net);
        let src = info.source as usize;
        let k = next[src];
        assert_eq!(
            data,
            bytes(100 * src + k, lens[k]),
            "seed {seed}: message {k} from {src}"
        );
        next[src] += 1;
    }
    net
}

#[test]
fn non_overtaking_across_protocols_and_interleavings() {
    for seed in 1..40 {
        non_overtaking_scenario(seed, |net| {
            let r = net.recv(2, None, Some(7), 4096);
            net.run();
            net.take_recv(2, r).unwrap()
        });
    }
}

#[test]
fn direct_receives_keep_the_order_of_posted_ones() {
    // The non-overtaking scenario with blocking receives: eager messages
    // taken directly, rendezvous ones through the fallback, queued ones by
    // an ordinary receive; every message in order per sender.
    let mut direct_taken = 0;
    for seed in 1..40 {
        let mut net = non_overtaking_scenario(seed, |net| {
            let (direct, r) = net.recv_blocking(2, None, Some(7), 4096);
            direct_taken += usize::from(direct);
            r.unwrap()
        });
        net.run();
        assert_eq!(net.engines[2].queue_lengths(), (0, 0), "seed {seed}");
    }
    assert!(direct_taken > 100, "only {direct_taken} direct receives");
}

#[test]
fn a_direct_receive_truncates_like_a_posted_one_and_waits_behind_it() {
    let mut net = SimNet::new(2, 64, 3);
    net.send(0, 1, 1, &bytes(1, 10), false);
    let (direct, r) = net.recv_blocking(1, Some(0), Some(1), 4);
    assert!(direct);
    let truncated = |r: &Result<_, ReqError>| {
        matches!(
            r,
            Err(ReqError::Truncated {
                capacity: 4,
                incoming: 10,
                ..
            })
        )
    };
    assert!(truncated(&r));
    assert_eq!(
        net.engines[1].queue_lengths(),
        (0, 1),
        "the message stays queued"
    );
    // Queued and too large: truncated at once, still queued.
    let (direct, r) = net.recv_blocking(1, Some(0), None, 4);
    assert!(direct && truncated(&r));
    assert_eq!(net.engines[1].queue_lengths(), (0, 1));
    // Queued and fitting: taken without a request.
    let (direct, r) = net.recv_blocking(1, Some(0), Some(1), 10);
    assert!(direct);
    assert_eq!(r.unwrap().1, bytes(1, 10));
    assert_eq!(net.engines[1].queue_lengths(), (0, 0));
    // A receive posted before: no direct receive.
    let posted = net.recv(1, Some(0), Some(2), 10);
    assert_eq!(
        net.engines[1].begin_direct(0, Some(0), Some(3), 10),
        DirectStart::Ordinary
    );
    net.send(0, 1, 2, b"posted", false);
    net.run();
    assert_eq!(net.take_recv(1, posted).unwrap().1, b"posted");
}

#[test]
fn a_queued_rendezvous_takes_an_ordinary_receive() {
    let mut net = SimNet::new(2, 16, 4);
    let msg = bytes(5, 100);
    let s = net.send(0, 1, 1, &msg, false);
    net.run();
    let (direct, r) = net.recv_blocking(1, Some(0), Some(1), 100);
    assert!(!direct);
    assert_eq!(r.unwrap().1, msg);
    assert!(net.done(0, s));
}

#[test]
fn a_synchronous_send_completes_when_a_direct_receive_takes_it() {
    let mut net = SimNet::new(2, 64, 9);
    let s = net.send(0, 1, 1, b"sync", true);
    let (direct, r) = net.recv_blocking(1, Some(0), Some(1), 8);
    assert!(direct);
    assert_eq!(r.unwrap().1, b"sync");
    net.run();
    assert!(net.done(0, s));
}

#[test]
fn a_direct_receive_fails_with_its_peer_and_a_cancelled_one_drains() {
    let mut e = Engine::new(1, 3, 64);
    assert_eq!(e.begin_direct(0, Some(0), None, 8), DirectStart::Waiting);
    e.handle_peer_lost(2, "gone".into());
    assert!(!e.direct_finished(), "another peer's loss does not matter");
    e.handle_peer_lost(0, "gone".into());
    assert!(matches!(
        e.end_direct(),
        DirectOutcome::Done(Err(ReqError::PeerLost { peer: 0, .. }))
    ));
    assert_eq!(
        e.begin_direct(0, Some(0), None, 8),
        DirectStart::Ordinary,
        "its source is gone"
    );
    // Cancelled while the payload arrives: no new direct receive (its
    // buffer would get the rest) until the payload is complete.
    let mut e = Engine::new(1, 3, 64);
    let frame = plain_eager(1, 4);
    assert_eq!(e.begin_direct(0, None, None, 8), DirectStart::Waiting);
    assert_eq!(e.handle_frame(2, frame), Ok(Some(Dest::Direct)));
    assert_eq!(e.end_direct(), DirectOutcome::Cancelled { receiving: true });
    assert_eq!(e.begin_direct(0, None, None, 8), DirectStart::Ordinary);
    e.handle_payload_done(2);
    assert_eq!(e.begin_direct(0, None, None, 8), DirectStart::Waiting);
    assert_eq!(
        e.end_direct(),
        DirectOutcome::Cancelled { receiving: false }
    );
    assert_eq!(
        e.queue_lengths(),
        (0, 0),
        "the cancelled message is not queued"
    );
}

#[test]
fn a_whole_eager_frame_is_checked_like_any_other() {
    let mut e = Engine::new(1, 2, 16);
    let eager = |len| plain_eager(0, len);
    assert!(
        e.handle_eager_whole(0, eager(4), &[1, 2, 3]).is_err(),
        "length differs"
    );
    assert!(
        e.handle_eager_whole(0, eager(17), &[0; 17]).is_err(),
        "above the limit"
    );
    assert!(
        e.handle_eager_whole(5, eager(1), &[0]).is_err(),
        "unknown rank"
    );
    assert!(
        e.handle_eager_whole(0, Frame::Bye, &[]).is_err(),
        "not eager"
    );
    assert_eq!(
        e.handle_eager_whole(0, eager(3), &[1, 2, 3]),
        Ok(None),
        "kept"
    );
    assert_eq!(e.probe(0, Some(0), None).map(|i| i.len), Some(3));
    // While another frame's payload is expected, no header is allowed.
    assert_eq!(e.handle_frame(0, eager(8)), Ok(Some(Dest::Staging)));
    assert!(e.handle_eager_whole(0, eager(1), &[0]).is_err());
}

#[test]
fn a_whole_eager_frame_that_a_posted_receive_waits_for_is_checked_the_same() {
    // The first posted receive takes a whole message in one pass
    // (`take_first_posted`): every check of the general way still holds.
    let mut e = Engine::new(1, 2, 16);
    let r = e.post_recv(0, None, None, 8);
    assert!(e
        .handle_eager_whole(0, plain_eager(0, 4), &[1, 2, 3])
        .is_err());
    assert!(e
        .handle_eager_whole(0, plain_eager(0, 17), &[0; 17])
        .is_err());
    assert!(e.handle_eager_whole(5, plain_eager(0, 1), &[0]).is_err());
    assert!(!e.is_done(r), "a rejected frame completed a receive");
    // Too large for the receive: it fails, the message stays queued.
    assert_eq!(
        e.handle_eager_whole(0, plain_eager(1, 9), &[9; 9]),
        Ok(None)
    );
    assert!(matches!(
        e.take_result(r),
        Some(Err(ReqError::Truncated {
            capacity: 8,
            incoming: 9,
            ..
        }))
    ));
    assert_eq!(e.probe(0, None, Some(1)).map(|i| i.len), Some(9));
    let big = e.post_recv(0, None, Some(1), 16);
    assert_eq!(
        e.take_result(big).and_then(Result::ok).map(|i| i.len),
        Some(9)
    );
    // A receive for another tag first: the message goes to the second.
    let other = e.post_recv(0, None, Some(7), 8);
    let mine = e.post_recv(0, Some(0), Some(2), 8);
    assert_eq!(
        e.handle_eager_whole(0, plain_eager(2, 3), &[1, 2, 3]),
        Ok(Some(Dest::Req(mine)))
    );
    assert!(!e.is_done(other));
    assert_eq!(
        e.take_result(mine),
        Some(Ok(MsgInfo {
            source: 0,
            tag: 2,
            len: 3
        }))
    );
    // The first posted receive matches: taken, complete at once.
    let first = e.post_recv(0, None, None, 8);
    assert_eq!(
        e.handle_eager_whole(0, plain_eager(7, 2), &[1, 2]),
        Ok(Some(Dest::Req(other)))
    );
    assert!(e.is_done(other) && !e.is_done(first));
    // While another frame's payload is expected, no header is allowed,
    // not even one the first posted receive would take.
    assert_eq!(
        e.handle_frame(0, plain_eager(5, 8)),
        Ok(Some(Dest::Req(first)))
    );
    let second = e.post_recv(0, None, None, 8);
    assert!(e.handle_eager_whole(0, plain_eager(5, 1), &[0]).is_err());
    assert!(!e.is_done(second));
}

#[test]
fn synchronous_eager_send_completes_only_after_the_match() {
    let mut net = SimNet::new(2, 64, 5);
    let s = net.send(0, 1, 1, b"sync", true);
    net.run();
    assert!(!net.done(0, s), "ssend finished with no receive posted");
    let r = net.recv(1, Some(0), Some(1), 4);
    net.run();
    assert!(net.done(0, s));
    assert_eq!(net.take_recv(1, r).unwrap().1, b"sync");
}

#[test]
fn forged_or_stale_ids_are_protocol_errors() {
    let mut e = Engine::new(0, 2, 64);
    assert!(e
        .handle_frame(
            1,
            Frame::Cts {
                sreq: 12345,
                rreq: 1
            }
        )
        .is_err());
    assert!(e.handle_frame(1, Frame::Data { rreq: 7, len: 4 }).is_err());
    assert!(e.handle_frame(1, Frame::SyncAck { sreq: 0 }).is_err());
    assert!(e.handle_frame(1, Frame::Fin { sreq: 3 }).is_err());
    assert!(e
        .handle_frame(
            1,
            Frame::CtsCoop {
                sreq: 3,
                rreq: 1,
                addr: 64,
                split: 4096,
            }
        )
        .is_err());
    assert!(e
        .handle_frame(1, Frame::Pushed { rreq: 3, ok: true })
        .is_err());
    assert!(e.handle_frame(5, Frame::Bye).is_err(), "unknown rank");
    // An eager frame above the eager limit is refused.
    let big = plain_eager(0, 65);
    assert!(e.handle_frame(1, big).is_err());
    // A CTS for a finished request (stale generation) is refused.
    let id = e.post_send(1, 0, 0, 1000, false);
    let _ = e.poll_transmit();
    e.handle_peer_lost(1, "test".into());
    assert!(e.take_result(id).is_some());
    assert!(e
        .handle_frame(
            1,
            Frame::Cts {
                sreq: id.to_wire(),
                rreq: 1
            }
        )
        .is_err());
}

#[test]
fn peer_loss_fails_what_depends_on_it_and_keeps_the_rest() {
    let mut net = SimNet::new(3, 64, 6);
    net.send(1, 0, 1, b"kept", false);
    net.run();
    let from1 = net.recv(0, Some(1), Some(2), 10);
    let any = net.recv(0, None, Some(3), 10);
    let to1 = net.send(0, 1, 1, &bytes(0, 500), false);
    net.engines[0].handle_peer_lost(1, "reset".into());
    assert!(matches!(
        net.take_recv(0, from1),
        Err(ReqError::PeerLost { peer: 1, .. })
    ));
    assert!(matches!(
        net.engines[0].take_result(to1),
        Some(Err(ReqError::PeerLost { .. }))
    ));
    assert!(
        !net.done(0, any),
        "a wildcard receive may still be satisfied by rank 2"
    );
    // A message that already arrived from the lost peer is still receivable.
    let r = net.recv(0, Some(1), Some(1), 10);
    assert_eq!(net.take_recv(0, r).unwrap().1, b"kept");
    // New operations on the lost peer fail at once.
    let s = net.send(0, 1, 1, b"x", false);
    assert!(matches!(
        net.engines[0].take_result(s),
        Some(Err(ReqError::PeerLost { .. }))
    ));
    net.send(2, 0, 3, b"ok", false);
    net.run();
    assert_eq!(net.take_recv(0, any).unwrap().1, b"ok");
}

#[test]
fn random_traffic_matches_a_reference_model() {
    // Random sizes, tags and wildcard receives from 3 senders to one
    // receiver; the reference: per (source, tag) FIFO, and a receive takes
    // the earliest-arrived message matching it. Since all messages are sent
    // before any receive here, "earliest arrived" is per-source order.
    for seed in 1..30u64 {
        let mut rng = Rng(seed * 7919);
        let mut net = SimNet::new(4, 48, seed);
        let mut sent: Vec<Vec<(u32, Vec<u8>)>> = vec![Vec::new(); 4];
        for i in 0..60 {
            let src = 1 + rng.below(3) as u32;
            let tag = rng.below(3) as u32;
            let len = [0, 1, 17, 48, 49, 300][rng.below(6)];
            let data = bytes(i, len);
            net.send(src, 0, tag, &data, false);
            sent[src as usize].push((tag, data));
        }
        net.run();
        let mut taken = vec![vec![false; 60]; 4];
        for _ in 0..60 {
            // Wildcard source, specific tag, or both, chosen at random among remaining messages.
            let src = 1 + rng.below(3);
            let Some(pos) = taken[src].iter().zip(&sent[src]).position(|(t, _)| !t) else {
                continue;
            };
            let tag = sent[src][pos].0;
            let want_src = Some(src as u32);
            let want_tag = if rng.below(2) == 0 { Some(tag) } else { None };
            let r = net.recv(0, want_src, want_tag, 300);
            net.run();
            let (info, data) = net.take_recv(0, r).unwrap();
            // Reference: first untaken message from src matching the tag pattern.
            let k = (0..sent[src].len())
                .find(|&k| !taken[src][k] && want_tag.is_none_or(|t| t == sent[src][k].0))
                .unwrap();
            taken[src][k] = true;
            assert_eq!(
                (info.source as usize, info.tag),
                (src, sent[src][k].0),
                "seed {seed}"
            );
            assert_eq!(data, sent[src][k].1, "seed {seed}");
        }
    }
}

#[test]
fn buffer_pool_reuses_and_stays_bounded() {
    let mut pool = BufferPool::default();
    let a = pool.take(1000);
    assert_eq!(a.len(), 1000);
    let cap = a.capacity();
    pool.give(a);
    let b = pool.take(10);
    assert_eq!(
        (b.len(), b.capacity()),
        (10, cap),
        "the recycled buffer is reused"
    );
    let c = pool.take(2000);
    assert_eq!(c.len(), 2000);
    // Buffers too small for what comes now make way for larger ones.
    for _ in 0..BufferPool::MAX_BUFFERS {
        pool.give(vec![0u8; 100]);
    }
    assert_eq!(pool.free.len(), BufferPool::MAX_BUFFERS);
    let d = pool.take(5000);
    pool.give(d);
    assert_eq!(pool.free.len(), 1, "the small buffers were dropped");
    assert_eq!(
        pool.take(5000).capacity(),
        5000,
        "and the large one is reused"
    );
    for _ in 0..1000 {
        pool.give(vec![0u8; 1 << 16]);
    }
    assert!(pool.free.len() <= BufferPool::MAX_BUFFERS);
    assert!(pool.bytes <= BufferPool::MAX_BYTES);
}

#[test]
fn eager_frame_now_never_overtakes_queued_frames() {
    let mut e = Engine::new(0, 3, 64);
    // Nothing queued: a small message may go at once.
    assert!(matches!(
        e.eager_frame_now(1, 0, 5, 8),
        Some(Frame::Eager { tag: 5, len: 8, .. })
    ));
    // Too large for eager: the general path.
    assert_eq!(e.eager_frame_now(1, 0, 5, 65), None);
    // A frame for peer 1 waits in the engine: the direct path must not pass it...
    let _rts = e.post_send(1, 0, 6, 1000, false);
    assert_eq!(e.eager_frame_now(1, 0, 7, 8), None);
    // ...but other peers are unaffected.
    assert!(e.eager_frame_now(2, 0, 7, 8).is_some());
    // A lost peer takes the general path (which reports the loss).
    e.handle_peer_lost(2, "gone".into());
    assert_eq!(e.eager_frame_now(2, 0, 7, 8), None);
}

#[test]
fn a_message_matched_when_its_staged_payload_completes_returns_its_credit() {
    // An eager message whose payload is still arriving when a receive is
    // posted is matched at the payload's end: its credit must go back like
    // any matched message's, or the sender's window shrinks for good.
    let mut e = Engine::new(1, 2, 64);
    e.set_window(0); // 2 × (64 + ENVELOPE_COST): a quarter is 96
    let frame = plain_eager(4, 60);
    assert_eq!(e.handle_frame(0, frame), Ok(Some(Dest::Staging)));
    let r = e.post_recv(0, Some(0), Some(4), 64);
    e.staging_mut(0).unwrap().fill(7);
    e.handle_payload_done(0);
    assert!(e.is_done(r));
    assert_eq!(
        transmitted(&mut e),
        vec![Frame::Credit {
            bytes: 60 + ENVELOPE_COST
        }]
    );
}

#[test]
fn flow_control_holds_a_flood_at_the_window_and_credit_releases_it() {
    let mut net = SimNet::new(2, 64, 3);
    for e in &mut net.engines {
        e.set_window(0); // raised to the minimum: 2 × (64 + ENVELOPE_COST)
    }
    let window = 2 * (64 + ENVELOPE_COST);
    let per_msg = 16 + ENVELOPE_COST;
    let fits = (window / per_msg) as usize;
    // A flood of 16-byte messages (and one rendezvous) to a receiver that
    // has posted nothing: only one window's worth reaches it.
    let mut sends = Vec::new();
    for i in 0..20 {
        sends.push(net.send(0, 1, 1, &bytes(i, 16), false));
    }
    sends.push(net.send(0, 1, 1, &bytes(99, 200), false));
    net.run();
    assert_eq!(net.engines[1].queue_lengths().1, fits, "unexpected queue");
    assert_eq!(net.engines[0].stats().held_for_credit as usize, 21 - fits);
    // A direct eager frame may not bypass held messages either.
    assert!(net.engines[0].eager_frame_now(1, 0, 1, 8).is_none());
    // Receiving releases the rest, in order, rendezvous included.
    for i in 0..20 {
        let r = net.recv(1, Some(0), Some(1), 200);
        net.run();
        let (_, data) = net.take_recv(1, r).unwrap();
        assert_eq!(data, bytes(i, 16), "message {i}");
        assert!(net.engines[1].queue_lengths().1 <= fits);
    }
    let r = net.recv(1, Some(0), Some(1), 200);
    net.run();
    assert_eq!(net.take_recv(1, r).unwrap().1, bytes(99, 200));
    assert!(sends.iter().all(|&id| net.done(0, id)));
    // Credit keeps flowing: everything was returned but less than a quarter.
    assert!(net.engines[0].eager_frame_now(1, 0, 1, 8).is_some());
}

#[test]
fn a_peer_eager_limit_beyond_the_window_widens_it() {
    // A shared-memory peer's eager limit may exceed the window (set by
    // `COURIER_SHM_EAGER_LIMIT`): its largest eager message must still go,
    // not wait for credit the whole window could never give.
    let mut net = SimNet::new(2, 64, 7);
    net.engines[0].set_window(0); // 2 × (64 + ENVELOPE_COST)
    net.engines[0].set_peer_caps(1, 4096, false);
    net.engines[1].set_peer_caps(0, 4096, false);
    let data = bytes(3, 4096);
    let s = net.send(0, 1, 1, &data, false);
    net.run();
    assert_eq!(net.engines[0].stats().held_for_credit, 0);
    assert_eq!(net.engines[0].stats().eager_sent, 1);
    let r = net.recv(1, Some(0), Some(1), 4096);
    net.run();
    assert_eq!(net.take_recv(1, r).unwrap().1, data);
    assert!(net.done(0, s));
}

#[test]
fn a_lone_large_message_goes_eagerly_while_credit_covers_it_and_nothing_is_in_flight() {
    let mut net = SimNet::new(2, 64, 5);
    for e in &mut net.engines {
        e.set_window(0); // 2 × (64 + ENVELOPE_COST)
    }
    net.engines[0].set_lone_eager_limit(1, 1000);
    net.engines[1].set_lone_eager_limit(0, 1000);
    // The window grew to two lone messages: 2 × (1000 + ENVELOPE_COST).
    let cost = 500 + ENVELOPE_COST;
    let fits = (2 * (1000 + ENVELOPE_COST) / cost) as usize;
    assert_eq!(fits, 3);
    // Nothing posted at the receiver: each message is alone when posted
    // (the one before it was written whole), so they go eagerly while the
    // credit covers them; the next goes by rendezvous, never held.
    let mut sends = Vec::new();
    for i in 0..fits + 1 {
        sends.push(net.send(0, 1, 1, &bytes(i, 500), false));
        net.run();
    }
    let stats = net.engines[0].stats();
    assert_eq!((stats.eager_sent, stats.rendezvous_sent), (fits as u64, 1));
    assert_eq!(stats.held_for_credit, 0);
    assert_eq!(
        net.engines[1].queue_lengths().1,
        fits + 1,
        "unexpected queue"
    );
    // Matching the eager ones returns their credit; the rendezvous one is
    // still in flight, so the next large message follows it by rendezvous
    // too, as does one above the lone limit.
    for (i, &s) in sends.iter().enumerate().take(fits) {
        let r = net.recv(1, Some(0), Some(1), 1000);
        net.run();
        assert_eq!(net.take_recv(1, r).unwrap().1, bytes(i, 500), "message {i}");
        assert!(net.done(0, s));
    }
    assert!(!net.done(0, sends[fits]));
    sends.push(net.send(0, 1, 1, &bytes(7, 500), false));
    sends.push(net.send(0, 1, 1, &bytes(8, 1001), false));
    net.run();
    assert_eq!(net.engines[0].stats().rendezvous_sent, 3);
    for (i, len) in [(fits, 500), (7, 500), (8, 1001)] {
        let r = net.recv(1, Some(0), Some(1), 1001);
        net.run();
        assert_eq!(net.take_recv(1, r).unwrap().1, bytes(i, len));
    }
    assert!(sends.iter().all(|&id| net.done(0, id)));
    // Alone again, with the credit back: eagerly, straight into the posted
    // receive.
    let r = net.recv(1, Some(0), Some(2), 1000);
    let s = net.send(0, 1, 2, &bytes(9, 1000), false);
    net.run();
    assert_eq!(net.engines[0].stats().eager_sent, fits as u64 + 1);
    assert_eq!(net.take_recv(1, r).unwrap().1, bytes(9, 1000));
    assert!(net.done(0, s));
}

#[test]
fn an_eager_message_beyond_what_the_receiver_allows_is_a_protocol_error() {
    // The receiver accepts eager messages up to the larger of its eager and
    // lone limits toward that peer, and nothing above.
    let mut e = Engine::new(1, 2, 64);
    assert!(e.handle_frame(0, plain_eager(1, 65)).is_err());
    let mut e = Engine::new(1, 2, 64);
    e.set_lone_eager_limit(0, 1000);
    assert_eq!(
        e.handle_frame(0, plain_eager(1, 1000)),
        Ok(Some(Dest::Staging))
    );
    let mut e = Engine::new(1, 2, 64);
    e.set_lone_eager_limit(0, 1000);
    assert!(e.handle_frame(0, plain_eager(1, 1001)).is_err());
}

#[test]
fn held_messages_fail_when_the_peer_is_lost() {
    let mut net = SimNet::new(2, 64, 5);
    net.engines[0].set_window(0);
    let ids: Vec<_> = (0..10)
        .map(|i| net.send(0, 1, 1, &bytes(i, 64), false))
        .collect();
    net.engines[0].handle_peer_lost(1, "gone".into());
    for id in ids {
        assert!(net.done(0, id));
    }
    assert!(!net.engines[0].has_transmits());
}

mod model {
    //! Property test: the engine against a reference model of MPI matching
    //! (non-overtaking per source, any-source/any-tag, posted-order matching,
    //! truncation errors that keep the message), over random interleavings
    //! of sends from three ranks and receives at a fourth, eager and
    //! rendezvous sizes alike.

    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Send {
            src: u32,
            tag: u32,
            len: usize,
        },
        Recv {
            src: Option<u32>,
            tag: Option<u32>,
            cap: usize,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        let len = prop::sample::select(vec![0usize, 1, 17, 48, 49, 300]);
        let cap = prop::sample::select(vec![0usize, 20, 48, 300]);
        prop_oneof![
            (1..4u32, 0..3u32, len).prop_map(|(src, tag, len)| Op::Send { src, tag, len }),
            (prop::option::of(1..4u32), prop::option::of(0..3u32), cap)
                .prop_map(|(src, tag, cap)| Op::Recv { src, tag, cap }),
        ]
    }

    /// What the model says a receive ends with.
    #[derive(Debug, Clone, PartialEq)]
    enum Outcome {
        Pending,
        Got(usize),
        Truncated,
    }

    struct Msg {
        n: usize,
        src: u32,
        tag: u32,
        len: usize,
    }

    fn matches(src: Option<u32>, tag: Option<u32>, m: &Msg) -> bool {
        src.is_none_or(|s| s == m.src) && tag.is_none_or(|t| t == m.tag)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn engine_matches_the_reference_model(ops in prop::collection::vec(op(), 1..40), seed in 1..u64::MAX) {
            let mut net = SimNet::new(4, 48, seed);
            let mut msgs: Vec<Msg> = Vec::new();
            // Model state: posted receives (index into `recvs`) and unexpected messages.
            let mut posted: Vec<usize> = Vec::new();
            let mut unexpected: Vec<usize> = Vec::new();
            // (request, source pattern, tag pattern, capacity, expected outcome)
            type Posted = (ReqId, Option<u32>, Option<u32>, usize, Outcome);
            let mut recvs: Vec<Posted> = Vec::new();
            for op in ops {
                match op {
                    Op::Send { src, tag, len } => {
                        let n = msgs.len();
                        msgs.push(Msg { n, src, tag, len });
                        net.send(src, 0, tag, &bytes(n, len), false);
                        net.run();
                        // The model: earliest posted receive that matches;
                        // too-small ones fail and are passed over.
                        let m = &msgs[n];
                        let mut taken = false;
                        while let Some(i) = posted.iter().position(|&r| matches(recvs[r].1, recvs[r].2, m)) {
                            let r = posted.remove(i);
                            if m.len > recvs[r].3 {
                                recvs[r].4 = Outcome::Truncated;
                            } else {
                                recvs[r].4 = Outcome::Got(n);
                                taken = true;
                                break;
                            }
                        }
                        if !taken {
                            unexpected.push(n);
                        }
                    }
                    Op::Recv { src, tag, cap } => {
                        let id = net.recv(0, src, tag, cap);
                        net.run();
                        let r = recvs.len();
                        let outcome = match unexpected.iter().position(|&n| matches(src, tag, &msgs[n])) {
                            Some(i) if msgs[unexpected[i]].len > cap => Outcome::Truncated,
                            Some(i) => Outcome::Got(unexpected.remove(i)),
                            None => {
                                posted.push(r);
                                Outcome::Pending
                            }
                        };
                        recvs.push((id, src, tag, cap, outcome));
                    }
                }
            }
            for (id, _, _, _, outcome) in recvs {
                match outcome {
                    Outcome::Pending => prop_assert!(!net.done(0, id)),
                    Outcome::Truncated => {
                        let truncated = matches!(net.take_recv(0, id), Err(ReqError::Truncated { .. }));
                        prop_assert!(truncated, "receive should have failed with truncation");
                    }
                    Outcome::Got(n) => {
                        let (info, data) = net.take_recv(0, id).expect("received");
                        let m = &msgs[n];
                        prop_assert_eq!((info.source, info.tag, info.len), (m.src, m.tag, m.len));
                        prop_assert_eq!(data, bytes(m.n, m.len));
                    }
                }
            }
            // Unmatched messages are still queued, in order.
            prop_assert_eq!(net.engines[0].queue_lengths().1, unexpected.len());
        }
    }
}

mod untrusted {
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// Random bytes as frames from peers never panic the engine.
        #[test]
        fn random_frames_never_panic_the_engine(data in prop::collection::vec(any::<u8>(), 0..2048)) {
            super::super::feed_untrusted(&data);
        }

        /// Valid headers (magic, version) with random kinds and fields.
        #[test]
        fn plausible_frames_never_panic_the_engine(records in prop::collection::vec((any::<u8>(), 1u8..12, prop::array::uniform32(any::<u8>()), any::<u32>()), 0..64)) {
            let mut data = Vec::new();
            for (peer, kind, fields, tail) in records {
                data.push(peer);
                data.extend_from_slice(&crate::wire::MAGIC.to_le_bytes());
                data.push(crate::wire::VERSION);
                data.push(kind);
                // Zero flags and lengths below 64 KiB, so frames get through
                // (header bytes 4..8 are flags, 16..24 the length).
                let mut f = fields;
                f[0..4].fill(0);
                f[14..20].fill(0);
                data.extend_from_slice(&f);
                data.extend_from_slice(&tail.to_le_bytes());
            }
            super::super::feed_untrusted(&data);
        }
    }
}

#[test]
fn a_direct_receive_matches_before_receives_posted_after_it() {
    // With threads, another thread may post a receive while a direct one
    // waits (it began with nothing posted, so it is the older): an eager
    // message for both goes to the direct receive.
    let mut e = Engine::new(1, 2, 64);
    assert_eq!(e.begin_direct(0, Some(0), None, 8), DirectStart::Waiting);
    let later = e.post_recv(0, Some(0), None, 8);
    let eager = plain_eager(1, 4);
    assert_eq!(e.handle_frame(0, eager), Ok(Some(Dest::Direct)));
    e.handle_payload_done(0);
    assert!(matches!(e.end_direct(), DirectOutcome::Done(Ok(_))));
    assert!(!e.is_done(later), "the later receive still waits");
    assert_eq!(e.queue_lengths(), (1, 0));

    // A rendezvous for both: the direct receive falls back to an ordinary
    // one, and the message stays queued for it rather than going to the
    // receive posted after it.
    let mut e = Engine::new(1, 2, 64);
    assert_eq!(e.begin_direct(0, Some(0), None, 1000), DirectStart::Waiting);
    let later = e.post_recv(0, Some(0), None, 1000);
    let rts = Frame::Rts {
        context: 0,
        tag: 2,
        len: 500,
        sreq: 7,
        addr: 0,
    };
    assert_eq!(e.handle_frame(0, rts), Ok(None));
    assert_eq!(e.end_direct(), DirectOutcome::Fallback);
    assert!(!e.is_done(later));
    assert_eq!(e.queue_lengths(), (1, 1), "queued, not matched");
}

#[test]
fn a_message_taken_now_goes_where_the_general_way_would_put_it() {
    // Two engines fed the same arrivals, one through `take_eager_now`
    // (falling back to the general way when it declines), one only the
    // general way: same destinations, same outcomes, same queues.
    let arrivals = [
        (0u32, 1u32, 4usize),
        (0, 2, 4),
        (0, 1, 100),
        (0, 1, 4),
        (1, 1, 4),
    ];
    let run = |fast: bool| {
        let mut e = Engine::new(1, 3, 64);
        let posted = e.post_recv(0, Some(0), Some(1), 8);
        let mut dests = Vec::new();
        let mut direct = Vec::new();
        for (i, &(context, tag, len)) in arrivals.iter().enumerate() {
            if i == 3 {
                // A blocking receive now waits (nothing posted is left).
                assert_eq!(e.begin_direct(0, Some(0), Some(1), 8), DirectStart::Waiting);
            }
            let payload = vec![i as u8; len];
            let taken = if fast {
                e.take_eager_now(0, context, tag, len)
            } else {
                None
            };
            let dest = match taken {
                Some(d) => Ok(Some(d)),
                None => {
                    let frame = Frame::Eager {
                        context,
                        tag,
                        len: len as u64,
                        sync: false,
                        sreq: 0,
                    };
                    e.handle_eager_whole(0, frame, &payload)
                }
            };
            dests.push(dest);
            if i == 3 {
                direct.push(e.end_direct());
            }
        }
        (dests, direct, e.is_done(posted), e.queue_lengths())
    };
    let (fast, slow) = (run(true), run(false));
    assert_eq!(fast, slow);
    // The first arrival took the posted receive, the fourth the direct
    // one; the others were queued (a mismatch, and one over the eager
    // limit is refused the same way by both).
    assert!(matches!(fast.0[0], Ok(Some(Dest::Req(_)))));
    assert_eq!(fast.0[3], Ok(Some(Dest::Direct)));
    assert!(matches!(fast.1[0], DirectOutcome::Done(Ok(_))));
}

#[test]
fn a_receive_takes_at_post_only_what_no_earlier_receive_or_queued_message_claims() {
    let pat = |source, tag| Pattern {
        context: 0,
        source,
        tag,
    };
    let env = |source, tag| Envelope {
        context: 0,
        source,
        tag,
    };
    let mut e = Engine::new(1, 3, 64);
    e.set_window(0); // 2 × (64 + ENVELOPE_COST): a quarter is 96
    assert!(e.may_take_at_post(&pat(Some(0), Some(1))));
    assert_eq!(e.stats().taken_at_post, 0);
    // A wildcard source, or this rank itself: never.
    assert!(!e.may_take_at_post(&pat(None, Some(1))));
    assert!(!e.may_take_at_post(&pat(Some(1), Some(1))));

    // Taking: only a message that matches, fits the receive and the
    // eager limit.
    let p = pat(Some(0), Some(2));
    assert!(!e.take_at_post(&p, 8, &env(0, 3), 4));
    assert!(!e.take_at_post(&p, 8, &env(0, 2), 9));
    assert!(!e.take_at_post(&p, 100, &env(0, 2), 65));
    // Its credit goes back like a matched message's (a quarter window
    // owed: at once).
    assert!(e.take_at_post(&p, 8, &env(0, 2), 8));
    assert_eq!(
        transmitted(&mut e),
        vec![Frame::Credit {
            bytes: 8 + ENVELOPE_COST
        }]
    );
    assert_eq!(e.stats().taken_at_post, 1);
    // Nothing entered the engine's queues.
    assert_eq!(e.queue_lengths(), (0, 0));

    // A queued message the receive matches arrived first.
    let frame = plain_eager(1, 4);
    assert_eq!(e.handle_eager_whole(0, frame, &[1; 4]), Ok(None));
    assert!(!e.may_take_at_post(&pat(Some(0), Some(1))));
    assert!(!e.may_take_at_post(&pat(Some(0), None)));
    assert!(e.may_take_at_post(&pat(Some(0), Some(2))));
    // A blocking receive waiting comes first.
    assert_eq!(e.begin_direct(0, Some(2), Some(9), 8), DirectStart::Waiting);
    assert!(!e.may_take_at_post(&pat(Some(0), Some(2))));
    assert!(matches!(e.end_direct(), DirectOutcome::Cancelled { .. }));
    assert!(e.may_take_at_post(&pat(Some(0), Some(2))));
    // A lost peer's receives fail the general way.
    e.handle_peer_lost(2, "gone".into());
    assert!(!e.may_take_at_post(&pat(Some(2), Some(2))));
    // Any receive posted earlier comes first (even one for another source).
    e.post_recv(0, None, Some(7), 8);
    assert!(!e.may_take_at_post(&pat(Some(0), Some(2))));
}
