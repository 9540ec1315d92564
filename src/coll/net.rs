//! The point-to-point interface collectives are written against.
//!
//! Every algorithm in [`super::algo`] talks to its peers only through
//! [`Net`]: blocking send, receive and combined send-receive of bytes on the
//! communicator's collective context. [`CommShared`] implements it over the
//! real progress engine; the unit tests implement it over threads and
//! channels, so every schedule is checked for every communicator size
//! without starting processes.

use crate::comm::CommShared;
use crate::error::{Error, Result};
use crate::request::{self, Names, Request};

/// Blocking point-to-point messages between the ranks of one communicator.
pub(crate) trait Net {
    /// Number of ranks.
    fn size(&self) -> usize;
    /// This rank, `0..size()`.
    fn rank(&self) -> usize;
    /// Sends `buf` to `dest`; returns once `buf` may be reused.
    fn send(&self, buf: &[u8], dest: usize, tag: u32) -> Result<()>;
    /// Receives exactly `buf.len()` bytes from `src`.
    fn recv(&self, buf: &mut [u8], src: usize, tag: u32) -> Result<()>;
    /// [`recv`](Self::recv) of an operand this rank combines at once. On one
    /// node such bytes are best copied by this rank's own core, so they are
    /// in its cache when the combine reads them: the sender's cooperative
    /// part (pushed from its core) is used only for large messages
    /// ([`super::tune::COMBINE_COOP_MIN`]). Measured on 2 ranks: reduce of
    /// 128–256 KiB 13–17 µs pulled alone against 21 µs cooperatively; from
    /// 1 MiB cooperation wins (115–131 against 160+ µs).
    fn recv_to_combine(&self, buf: &mut [u8], src: usize, tag: u32) -> Result<()> {
        self.recv(buf, src, tag)
    }
    /// Sends `out` to `dest` while receiving `inc` from `src` (neither waits
    /// for the other, so pairs of ranks may exchange without deadlock).
    fn sendrecv(&self, out: &[u8], dest: usize, inc: &mut [u8], src: usize, tag: u32)
        -> Result<()>;
    /// [`sendrecv`](Self::sendrecv) while `during` runs: both are posted
    /// before `during` starts, so the exchange overlaps local work.
    fn sendrecv_while(
        &self,
        out: &[u8],
        dest: usize,
        inc: &mut [u8],
        src: usize,
        tag: u32,
        during: &mut dyn FnMut() -> Result<()>,
    ) -> Result<()>;
    /// Receives `buf` from `src` while `during` runs (the receive is posted
    /// before `during` starts, so transfer and computation overlap).
    fn recv_while(
        &self,
        buf: &mut [u8],
        src: usize,
        tag: u32,
        during: &mut dyn FnMut() -> Result<()>,
    ) -> Result<()>;
}

/// Point-to-point on the communicator's collective context: blocking
/// sends and receives through the same driver as user messages, with
/// lengths checked (a collective message must be exactly as long as its
/// receiver expects).
impl Net for CommShared {
    fn size(&self) -> usize {
        CommShared::size(self)
    }

    fn rank(&self) -> usize {
        CommShared::rank(self)
    }

    fn send(&self, bytes: &[u8], dest: usize, tag: u32) -> Result<()> {
        let peer = self.world_rank(dest)?;
        request::send_blocking(&self.progress, peer, self.coll_context(), tag, bytes, false)
    }

    fn recv(&self, bytes: &mut [u8], src: usize, tag: u32) -> Result<()> {
        self.recv_coop_min(bytes, src, tag, 0)
    }

    fn recv_to_combine(&self, bytes: &mut [u8], src: usize, tag: u32) -> Result<()> {
        self.recv_coop_min(bytes, src, tag, super::tune::COMBINE_COOP_MIN)
    }

    fn sendrecv(
        &self,
        out: &[u8],
        dest: usize,
        inc: &mut [u8],
        src: usize,
        tag: u32,
    ) -> Result<()> {
        let peer = self.world_rank(dest)?;
        request::scope(|s| {
            let ctx = self.coll_context();
            let r = Request::send(s, &self.progress, peer, ctx, tag, out, false)?;
            let got = Net::recv(self, inc, src, tag);
            let sent = r.wait_raw();
            got.and(sent)
        })
    }

    fn sendrecv_while(
        &self,
        out: &[u8],
        dest: usize,
        inc: &mut [u8],
        src: usize,
        tag: u32,
        during: &mut dyn FnMut() -> Result<()>,
    ) -> Result<()> {
        self.recv_during(Some((out, dest)), inc, src, tag, during)
    }

    fn recv_while(
        &self,
        bytes: &mut [u8],
        src: usize,
        tag: u32,
        during: &mut dyn FnMut() -> Result<()>,
    ) -> Result<()> {
        self.recv_during(None, bytes, src, tag, during)
    }
}

impl CommShared {
    /// Posts a receive of exactly `inc.len()` bytes from `src` (and, with
    /// `send`, a send of those bytes to that rank), runs `during`, then
    /// waits for both: transfers overlap the local work.
    fn recv_during(
        &self,
        send: Option<(&[u8], usize)>,
        inc: &mut [u8],
        src: usize,
        tag: u32,
        during: &mut dyn FnMut() -> Result<()>,
    ) -> Result<()> {
        let from = self.world_rank(src)?;
        let to = send.map(|(_, dest)| self.world_rank(dest)).transpose()?;
        let want = inc.len();
        request::scope(|s| {
            let ctx = self.coll_context();
            let p = &self.progress;
            let r = Request::recv(s, p, Names::Internal, ctx, Some(from), Some(tag), inc, 1)?;
            let w = match (send, to) {
                (Some((out, _)), Some(to)) => Some(Request::send(s, p, to, ctx, tag, out, false)?),
                _ => None,
            };
            let done = during();
            let info = r.wait_info().map_err(|e| self.group().local_error(e));
            let sent = w.map_or(Ok(()), Request::wait_raw);
            done?;
            check_len(src, info?.len, want)?;
            sent
        })
    }

    /// A blocking receive on the collective context, cooperative only from
    /// `coop_min` bytes (0: as configured), of exactly `bytes.len()` bytes.
    fn recv_coop_min(&self, bytes: &mut [u8], src: usize, tag: u32, coop_min: usize) -> Result<()> {
        let peer = self.world_rank(src)?;
        let want = bytes.len();
        let info = request::recv_blocking_coop_min(
            &self.progress,
            self.coll_context(),
            Some(peer),
            Some(tag),
            bytes,
            coop_min,
        )
        .map_err(|e| self.group().local_error(e))?;
        check_len(src, info.len, want)
    }
}

/// A collective message must have exactly the length its receiver expects.
fn check_len(src: usize, got: usize, want: usize) -> Result<()> {
    if got != want {
        return Err(Error::InvalidArgument(format!(
            "collective message from rank {src} has {got} bytes, {want} expected: do all ranks pass the same counts?"
        )));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod sim {
    //! A thread-per-rank [`Net`] for unit tests. Sends are synchronous when
    //! asked (they return only once the receiver has taken the message), so
    //! a schedule that would deadlock on rendezvous-sized messages deadlocks
    //! here too, and the test's timeout reports it.

    use super::Net;
    use crate::error::{Error, Result};
    use std::collections::VecDeque;
    use std::sync::{Arc, Condvar, Mutex};
    use std::time::Duration;

    struct Msg {
        src: usize,
        tag: u32,
        data: Vec<u8>,
        id: u64,
    }

    #[derive(Default)]
    struct State {
        boxes: Vec<VecDeque<Msg>>,
        /// Ids of messages taken by their receiver.
        taken: std::collections::HashSet<u64>,
        next_id: u64,
    }

    /// The network shared by every simulated rank.
    pub(crate) struct World {
        state: Mutex<State>,
        cv: Condvar,
        sync: bool,
    }

    /// One rank's end of a simulated network.
    pub(crate) struct SimNet {
        world: Arc<World>,
        rank: usize,
        size: usize,
    }

    const PATIENCE: Duration = Duration::from_secs(20);

    impl SimNet {
        fn post(&self, buf: &[u8], dest: usize, tag: u32) -> u64 {
            let mut st = self.world.state.lock().unwrap();
            let id = st.next_id;
            st.next_id += 1;
            st.boxes[dest].push_back(Msg {
                src: self.rank,
                tag,
                data: crate::sys::copy::to_vec(buf),
                id,
            });
            self.world.cv.notify_all();
            id
        }

        fn wait_taken(&self, id: u64) -> Result<()> {
            if !self.world.sync {
                return Ok(());
            }
            let st = self.world.state.lock().unwrap();
            let (st, timeout) = self
                .world
                .cv
                .wait_timeout_while(st, PATIENCE, |s| !s.taken.contains(&id))
                .unwrap();
            drop(st);
            if timeout.timed_out() {
                return Err(Error::InvalidArgument(format!(
                    "rank {}: send never matched (deadlock)",
                    self.rank
                )));
            }
            Ok(())
        }
    }

    impl Net for SimNet {
        fn size(&self) -> usize {
            self.size
        }
        fn rank(&self) -> usize {
            self.rank
        }
        fn send(&self, buf: &[u8], dest: usize, tag: u32) -> Result<()> {
            assert!(dest < self.size && dest != self.rank, "bad dest {dest}");
            let id = self.post(buf, dest, tag);
            self.wait_taken(id)
        }
        fn recv(&self, buf: &mut [u8], src: usize, tag: u32) -> Result<()> {
            assert!(src < self.size && src != self.rank, "bad src {src}");
            let mut st = self.world.state.lock().unwrap();
            let deadline = std::time::Instant::now() + PATIENCE;
            loop {
                let mailbox = &mut st.boxes[self.rank];
                if let Some(i) = mailbox.iter().position(|m| m.src == src && m.tag == tag) {
                    let m = mailbox.remove(i).unwrap();
                    assert_eq!(
                        m.data.len(),
                        buf.len(),
                        "rank {}: message from {src} tag {tag} has the wrong length",
                        self.rank
                    );
                    crate::sys::copy::copy(buf, &m.data);
                    st.taken.insert(m.id);
                    self.world.cv.notify_all();
                    return Ok(());
                }
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    return Err(Error::InvalidArgument(format!(
                        "rank {}: nothing from {src} with tag {tag} (deadlock)",
                        self.rank
                    )));
                }
                st = self.world.cv.wait_timeout(st, left).unwrap().0;
            }
        }
        fn sendrecv(
            &self,
            out: &[u8],
            dest: usize,
            inc: &mut [u8],
            src: usize,
            tag: u32,
        ) -> Result<()> {
            let id = self.post(out, dest, tag);
            self.recv(inc, src, tag)?;
            self.wait_taken(id)
        }
        fn sendrecv_while(
            &self,
            out: &[u8],
            dest: usize,
            inc: &mut [u8],
            src: usize,
            tag: u32,
            during: &mut dyn FnMut() -> Result<()>,
        ) -> Result<()> {
            let id = self.post(out, dest, tag);
            during()?;
            self.recv(inc, src, tag)?;
            self.wait_taken(id)
        }
        fn recv_while(
            &self,
            buf: &mut [u8],
            src: usize,
            tag: u32,
            during: &mut dyn FnMut() -> Result<()>,
        ) -> Result<()> {
            // Messages wait in the mailbox until taken: computing first and
            // receiving after is the same schedule.
            during()?;
            self.recv(buf, src, tag)
        }
    }

    /// Runs `body` on `p` simulated ranks (threads) and returns their results
    /// in rank order. No message may be left undelivered.
    pub(crate) fn run<R: Send>(p: usize, sync: bool, body: impl Fn(&SimNet) -> R + Sync) -> Vec<R> {
        let world = Arc::new(World {
            state: Mutex::new(State {
                boxes: (0..p).map(|_| VecDeque::new()).collect(),
                ..State::default()
            }),
            cv: Condvar::new(),
            sync,
        });
        let out = std::thread::scope(|s| {
            let handles: Vec<_> = (0..p)
                .map(|rank| {
                    let net = SimNet {
                        world: world.clone(),
                        rank,
                        size: p,
                    };
                    let body = &body;
                    s.spawn(move || body(&net))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .collect::<Vec<R>>()
        });
        let st = world.state.lock().unwrap();
        for (r, b) in st.boxes.iter().enumerate() {
            assert!(b.is_empty(), "{} messages left for rank {r}", b.len());
        }
        out
    }
}
