//! Collectives that move data without combining it: barrier, broadcast,
//! gather and scatter (linear at the root), all-gather, all-to-all, and
//! their v-variants, which lay blocks out contiguously in rank order
//! (displacements are the prefix sums of the counts).

use super::algo::{self, bytes, bytes_mut};
use super::check::{Coll, Signature};
use super::{arena, call, check_len, check_root, displacements, node, tune};
use crate::comm::Communicator;
use crate::error::{Error, Result};
use bytemuck::Pod;

impl Communicator {
    /// Blocks until every rank of the communicator has called it
    /// (`MPI_Barrier`; dissemination).
    pub fn barrier(&self) -> Result<()> {
        let c = self.shared();
        let _in = c.enter(|| Signature::new(Coll::Barrier), None, || Ok(()))?;
        match tune::barrier(call::<u8>(c, 0, true)?)? {
            tune::Barrier::Dissemination => algo::barrier_dissemination(c),
            tune::Barrier::Shm => arena(c)?.barrier(&|| node::job_check(c)),
        }
    }

    /// Copies `buf` from `root` to every rank (`MPI_Bcast`). Every rank
    /// passes a buffer of the same length.
    ///
    /// ```
    /// let universe = courier::init()?;
    /// let world = universe.world();
    /// let mut params = [0f64; 3];
    /// if world.rank() == 0 {
    ///     params = [0.1, 0.2, 0.3];
    /// }
    /// world.broadcast(&mut params, 0)?;
    /// # Ok::<(), courier::Error>(())
    /// ```
    pub fn broadcast<T: Pod>(&self, buf: &mut [T], root: usize) -> Result<()> {
        let c = self.shared();
        let sig = || Signature::new(Coll::Bcast).root(root).elems::<T>(buf.len());
        let _in = c.enter(sig, None, || check_root(c, root))?;
        match tune::bcast(call::<T>(c, buf.len(), true)?)? {
            tune::Bcast::ShmPull if bcast_by_pulls(c, bytes_mut(buf), root)? => Ok(()),
            // (By pulls refused somewhere: every rank takes the copying arena.)
            tune::Bcast::Shm | tune::Bcast::ShmPull => {
                arena(c)?.bcast(&|| node::job_check(c), bytes_mut(buf), root)
            }
            tune::Bcast::Binomial => algo::bcast_binomial(c, bytes_mut(buf), root),
            tune::Bcast::Pipelined => {
                algo::bcast_binomial_pipelined(c, bytes_mut(buf), root, tune::segment())
            }
            tune::Bcast::ScatterAllgather => algo::bcast_scatter_allgather(c, bytes_mut(buf), root),
        }
    }

    /// Collects every rank's `send` at `root`, in rank order, into `recv`
    /// (`size × send.len()` elements at the root; ignored elsewhere) (`MPI_Gather`).
    pub fn gather<T: Pod>(&self, send: &[T], recv: &mut [T], root: usize) -> Result<()> {
        let c = self.shared();
        let sig = || {
            Signature::new(Coll::Gather)
                .root(root)
                .elems::<T>(send.len())
        };
        let _in = c.enter(sig, None, || {
            check_root(c, root)?;
            if c.rank() == root {
                check_len("gather at the root", recv.len(), send.len() * c.size())?;
            }
            Ok(())
        })?;
        self.gatherv(send, recv, &vec![send.len(); self.size()], root)
    }

    /// Sends block `r` of `send` (`size × recv.len()` elements at the root)
    /// to rank `r` (`MPI_Scatter`).
    pub fn scatter<T: Pod>(&self, send: &[T], recv: &mut [T], root: usize) -> Result<()> {
        let c = self.shared();
        let sig = || {
            Signature::new(Coll::Scatter)
                .root(root)
                .elems::<T>(recv.len())
        };
        let _in = c.enter(sig, None, || {
            check_root(c, root)?;
            if c.rank() == root {
                check_len("scatter at the root", send.len(), recv.len() * c.size())?;
            }
            Ok(())
        })?;
        self.scatterv(send, &vec![recv.len(); self.size()], recv, root)
    }

    /// Every rank gets every rank's `send`, in rank order, in `recv`
    /// (`size × send.len()` elements) (`MPI_Allgather`).
    ///
    /// ```
    /// let universe = courier::init()?;
    /// let world = universe.world();
    /// let mut ranks = vec![0u32; world.size()];
    /// world.all_gather(&[world.rank() as u32], &mut ranks)?;
    /// # Ok::<(), courier::Error>(())
    /// ```
    pub fn all_gather<T: Pod>(&self, send: &[T], recv: &mut [T]) -> Result<()> {
        let c = self.shared();
        let sig = || Signature::new(Coll::AllGather).elems::<T>(send.len());
        let _in = c.enter(sig, None, || {
            check_len("all_gather", recv.len(), send.len() * c.size())
        })?;
        gather_blocks::<T>(c, bytes_mut(recv), Some(bytes(send)), send.len())
    }

    /// [`all_gather`](Self::all_gather) in place: `buf` holds `size` equal
    /// blocks, this rank's already in block `rank`.
    pub fn all_gather_in_place<T: Pod>(&self, buf: &mut [T]) -> Result<()> {
        let c = self.shared();
        let p = c.size();
        let n = buf.len() / p;
        let sig = || Signature::new(Coll::AllGather).elems::<T>(n);
        let _in = c.enter(sig, None, || {
            if buf.len() % p != 0 {
                return Err(Error::InvalidArgument(format!(
                    "all_gather: {} elements do not split into {p} blocks",
                    buf.len()
                )));
            }
            Ok(())
        })?;
        gather_blocks::<T>(c, bytes_mut(buf), None, n)
    }

    /// Block `r` of `send` goes to rank `r`, which stores it as block `me`
    /// of its `recv` (`MPI_Alltoall`). Both buffers hold `size` equal blocks.
    pub fn all_to_all<T: Pod>(&self, send: &[T], recv: &mut [T]) -> Result<()> {
        let c = self.shared();
        let p = c.size();
        let n = send.len() / p;
        let sig = || Signature::new(Coll::AllToAll).elems::<T>(n);
        let _in = c.enter(sig, None, || {
            if send.len() % p != 0 {
                return Err(Error::InvalidArgument(format!(
                    "all_to_all: {} elements do not split into {p} blocks",
                    send.len()
                )));
            }
            check_len("all_to_all recv", recv.len(), send.len())
        })?;
        let sz = std::mem::size_of::<T>();
        let mut how = call::<T>(c, n, true)?;
        how.node_bytes = std::mem::size_of_val(send);
        if how.node_slot < p {
            // Each turn carries at least a byte for every rank: an arena
            // whose cells are smaller cannot serve (nor be forced).
            how.node_slot = 0;
        }
        match tune::alltoall(how)? {
            // Single copy straight from each rank's send buffer.
            tune::Alltoall::ShmPull
                if alltoall_by_pulls(c, bytes(send), bytes_mut(recv), n * sz)? =>
            {
                Ok(())
            }
            // (By pulls refused somewhere: every rank takes the copying arena.)
            tune::Alltoall::Shm | tune::Alltoall::ShmPull => {
                arena(c)?.alltoall(&|| node::job_check(c), bytes(send), bytes_mut(recv), n * sz)
            }
            tune::Alltoall::Bruck => algo::alltoall_bruck(c, bytes(send), bytes_mut(recv), n * sz),
            tune::Alltoall::Pairwise => {
                let d: Vec<usize> = (0..=p).map(|r| r * n * sz).collect();
                algo::alltoall_pairwise(c, bytes(send), &d, bytes_mut(recv), &d)
            }
        }
    }

    /// [`all_to_all`](Self::all_to_all) in place: `buf` holds the blocks to
    /// send and receives the blocks from every rank.
    pub fn all_to_all_in_place<T: Pod>(&self, buf: &mut [T]) -> Result<()> {
        let c = self.shared();
        let sig = || Signature::new(Coll::AllToAll).elems::<T>(buf.len() / c.size());
        let _in = c.enter(sig, None, || Ok(()))?;
        let send = crate::sys::copy::to_vec(buf);
        self.all_to_all(&send, buf)
    }

    /// [`gather`](Self::gather) with a count per rank (`MPI_Gatherv`): rank
    /// r sends `counts[r]` elements; the root's `recv` holds the blocks
    /// contiguously in rank order (`counts.iter().sum()` elements).
    pub fn gatherv<T: Pod>(
        &self,
        send: &[T],
        recv: &mut [T],
        counts: &[usize],
        root: usize,
    ) -> Result<()> {
        let c = self.shared();
        let sig = || {
            Signature::new(Coll::Gather)
                .root(root)
                .elems::<T>(send.len())
                .counts(counts)
        };
        let mut displs = Vec::new();
        let _in = c.enter(sig, Some(counts), || {
            check_root(c, root)?;
            displs = displacements(c, counts)?;
            check_len("gatherv: this rank's block", send.len(), counts[c.rank()])?;
            if c.rank() == root {
                check_len("gatherv at the root", recv.len(), displs[c.size()])?;
            }
            Ok(())
        })?;
        let sz = std::mem::size_of::<T>();
        let d: Vec<usize> = displs.iter().map(|x| x * sz).collect();
        let recv: &mut [T] = if c.rank() == root { recv } else { &mut [] };
        algo::gather_linear(c, bytes(send), bytes_mut(recv), &d, root)
    }

    /// [`scatter`](Self::scatter) with a count per rank (`MPI_Scatterv`).
    pub fn scatterv<T: Pod>(
        &self,
        send: &[T],
        counts: &[usize],
        recv: &mut [T],
        root: usize,
    ) -> Result<()> {
        let c = self.shared();
        let sig = || {
            Signature::new(Coll::Scatter)
                .root(root)
                .elems::<T>(recv.len())
                .counts(counts)
        };
        let mut displs = Vec::new();
        let _in = c.enter(sig, Some(counts), || {
            check_root(c, root)?;
            displs = displacements(c, counts)?;
            check_len("scatterv: this rank's block", recv.len(), counts[c.rank()])?;
            if c.rank() == root {
                check_len("scatterv at the root", send.len(), displs[c.size()])?;
            }
            Ok(())
        })?;
        let sz = std::mem::size_of::<T>();
        let d: Vec<usize> = displs.iter().map(|x| x * sz).collect();
        let send: &[T] = if c.rank() == root { send } else { &[] };
        algo::scatter_linear(c, bytes(send), &d, bytes_mut(recv), root)
    }

    /// [`all_gather`](Self::all_gather) with a count per rank
    /// (`MPI_Allgatherv`; ring, or the equal-count algorithms when the counts
    /// are equal).
    pub fn all_gatherv<T: Pod>(&self, send: &[T], recv: &mut [T], counts: &[usize]) -> Result<()> {
        let c = self.shared();
        let (p, me) = (c.size(), c.rank());
        let sig = || {
            Signature::new(Coll::AllGather)
                .elems::<T>(send.len())
                .counts(counts)
        };
        let mut d = Vec::new();
        let _in = c.enter(sig, Some(counts), || {
            d = displacements(c, counts)?;
            check_len("all_gatherv: this rank's block", send.len(), counts[me])?;
            check_len("all_gatherv", recv.len(), d[p])
        })?;
        crate::sys::copy::copy(&mut recv[d[me]..d[me + 1]], send);
        // Equal counts are known on every rank alike (counts are arguments
        // every rank passes), so every rank picks the same algorithm.
        if counts.iter().all(|&n| n == counts[0]) {
            return gather_blocks::<T>(c, bytes_mut(recv), None, counts[0]);
        }
        let sz = std::mem::size_of::<T>();
        let bd: Vec<usize> = d.iter().map(|x| x * sz).collect();
        algo::allgather_ring(c, bytes_mut(recv), &bd, None)
    }

    /// [`all_to_all`](Self::all_to_all) with counts (`MPI_Alltoallv`;
    /// pairwise exchange): this rank sends `send_counts[r]` elements to rank
    /// r and receives `recv_counts[r]` from it; both buffers are contiguous
    /// in rank order.
    pub fn all_to_allv<T: Pod>(
        &self,
        send: &[T],
        send_counts: &[usize],
        recv: &mut [T],
        recv_counts: &[usize],
    ) -> Result<()> {
        let c = self.shared();
        let (p, me) = (c.size(), c.rank());
        // Counts legitimately differ between ranks here: only the
        // collective and the element type are compared.
        let sig = || Signature::new(Coll::AllToAllv).elems::<T>(0);
        let (mut sd, mut rd) = (Vec::new(), Vec::new());
        let _in = c.enter(sig, None, || {
            sd = displacements(c, send_counts)?;
            rd = displacements(c, recv_counts)?;
            check_len("all_to_allv send", send.len(), sd[p])?;
            check_len("all_to_allv recv", recv.len(), rd[p])?;
            check_len(
                "all_to_allv: the block to self",
                recv_counts[me],
                send_counts[me],
            )
        })?;
        let sz = std::mem::size_of::<T>();
        let sdb: Vec<usize> = sd.iter().map(|x| x * sz).collect();
        let rdb: Vec<usize> = rd.iter().map(|x| x * sz).collect();
        algo::alltoall_pairwise(c, bytes(send), &sdb, bytes_mut(recv), &rdb)
    }
}

/// All-gather of `size` equal blocks of `n` elements of `T` in `buf`.
/// This rank's block is in place, or, with `own`, still in the caller's
/// send buffer: the point-to-point algorithms then send it from there and
/// copy it into place during their first exchange.
fn gather_blocks<T: Pod>(
    c: &crate::comm::CommShared,
    buf: &mut [u8],
    own: Option<&[u8]>,
    n: usize,
) -> Result<()> {
    let sz = std::mem::size_of::<T>();
    let p = c.size();
    let me = c.rank();
    // Block displacements, for the point-to-point algorithms only.
    let d = || -> Vec<usize> { (0..=p).map(|r| r * n * sz).collect() };
    match tune::allgather(call::<T>(c, n, true)?)? {
        // Publishes `own` straight from the send buffer, and copies it into
        // place while the others publish theirs.
        // Single copy straight from each rank's block.
        tune::Allgather::ShmPull if allgather_by_pulls(c, buf, n * sz, own)? => Ok(()),
        // (By pulls refused somewhere: every rank takes the copying arena.)
        tune::Allgather::Shm | tune::Allgather::ShmPull => {
            arena(c)?.allgather(&|| node::job_check(c), buf, n * sz, own)
        }
        tune::Allgather::Ring => algo::allgather_ring(c, buf, &d(), own),
        tune::Allgather::RecursiveDoubling => algo::allgather_recursive_doubling(c, buf, &d(), own),
        tune::Allgather::Bruck => {
            if let Some(own) = own {
                crate::sys::copy::copy(&mut buf[me * n * sz..(me + 1) * n * sz], own);
            }
            algo::allgather_bruck(c, buf, n * sz)
        }
    }
}

// The single-copy exchanges, out of line (they serve large calls only);
// a refusal is handed back, and the caller's own arena path, one call
// site for both ways, copies instead.

/// Broadcast by single copies (`NodeColl::bcast_pull`). `Ok(false)`:
/// refused somewhere.
#[inline(never)]
fn bcast_by_pulls(c: &crate::comm::CommShared, buf: &mut [u8], root: usize) -> Result<bool> {
    let node = arena(c)?;
    node.bcast_pull(&|| node::job_check(c), buf, root)
}

/// All-to-all by single copies (`NodeColl::alltoall_pull`). `Ok(false)`:
/// refused somewhere.
#[inline(never)]
fn alltoall_by_pulls(
    c: &crate::comm::CommShared,
    send: &[u8],
    recv: &mut [u8],
    block: usize,
) -> Result<bool> {
    let node = arena(c)?;
    node.alltoall_pull(&|| node::job_check(c), send, recv, block)
}

/// All-gather by single copies (`NodeColl::allgather_pull`). `Ok(false)`:
/// refused somewhere.
#[inline(never)]
fn allgather_by_pulls(
    c: &crate::comm::CommShared,
    buf: &mut [u8],
    block: usize,
    own: Option<&[u8]>,
) -> Result<bool> {
    let node = arena(c)?;
    node.allgather_pull(&|| node::job_check(c), buf, block, own)
}
