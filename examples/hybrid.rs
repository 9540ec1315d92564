//! A hybrid program: a few ranks, each running rayon over its cores and
//! communicating from rayon tasks.
//!
//! `courier run -n 2 --bind-to none target/release/examples/hybrid`
//!
//! A 1-D Jacobi relaxation (`u[i] ← (u[i-1] + u[i+1]) / 2`, ends held at 1
//! and 0) on a grid split across the ranks:
//! * the two halo exchanges (with the left and the right neighbour) run as
//!   two rayon tasks at once (`rayon::join`);
//! * the sweep over the rank's points is a rayon parallel iterator;
//! * the residual's all-reduce runs in one rayon task while another
//!   computes a dot product of the grid with itself (its all-reduce then
//!   follows).
//!
//! At the end the ranks gather the grid and rank 0 checks it against the
//! same relaxation computed serially: the sweep is element-wise, so the
//! two agree to the bit. The dot products (of integers, exact in any
//! order) are checked against their closed form. Prints `hybrid: ok`.

use courier::{Communicator, Op};
use rayon::prelude::*;

/// Grid points per rank.
const LOCAL: usize = 20_000;
/// Sweeps.
const SWEEPS: usize = 200;
const LEFT_TAG: u32 = 1;
const RIGHT_TAG: u32 = 2;

fn main() -> courier::Result<()> {
    let universe = courier::init()?;
    let world = universe.world();
    let (rank, size) = (world.rank(), world.size());
    let n = LOCAL * size;

    // This rank's points plus one ghost cell at each end.
    let mut u = vec![0f64; LOCAL + 2];
    if rank == 0 {
        u[1] = 1.0; // the left end of the grid (global point 0), held fixed
    }
    let mut next = u.clone();
    let mut residual = 0.0;
    for sweep in 0..SWEEPS {
        exchange_halos(&world, &mut u)?;
        // The sweep, in parallel; the grid's two ends stay fixed.
        let (first, last) = (rank == 0, rank == size - 1);
        next[1..=LOCAL]
            .par_iter_mut()
            .enumerate()
            .for_each(|(k, x)| {
                let i = k + 1;
                *x = if (first && i == 1) || (last && i == LOCAL) {
                    u[i]
                } else {
                    0.5 * (u[i - 1] + u[i + 1])
                };
            });
        let local_change = (1..=LOCAL)
            .into_par_iter()
            .map(|i| (next[i] - u[i]).abs())
            .reduce(|| 0.0, f64::max);
        std::mem::swap(&mut u, &mut next);
        // The residual's all-reduce in one task, a dot product of integers
        // (exact in any order) in the other.
        let (r, dot) = rayon::join(
            || {
                let mut out = [0f64];
                world
                    .all_reduce(&[local_change], &mut out, Op::Max)
                    .map(|()| out[0])
            },
            || {
                (1..=LOCAL)
                    .into_par_iter()
                    .map(|i| {
                        let g = (rank * LOCAL + i) as f64;
                        g * g
                    })
                    .sum::<f64>()
            },
        );
        residual = r?;
        let mut total = [0f64];
        world.all_reduce(&[dot], &mut total, Op::Sum)?;
        // Σ g² for g = 1..n.
        let want = (n * (n + 1) * (2 * n + 1) / 6) as f64;
        if total[0] != want {
            eprintln!("hybrid: sweep {sweep}: dot product {} != {want}", total[0]);
            std::process::exit(1);
        }
    }

    let mut grid = vec![0f64; if rank == 0 { n } else { 0 }];
    world.gather(&u[1..=LOCAL], &mut grid, 0)?;
    if rank == 0 {
        let serial = jacobi_serial(n, SWEEPS);
        if let Some(i) = (0..n).find(|&i| grid[i].to_bits() != serial[i].to_bits()) {
            eprintln!(
                "hybrid: point {i}: {} (parallel) != {} (serial)",
                grid[i], serial[i]
            );
            std::process::exit(1);
        }
        println!(
            "hybrid: ok ({size} ranks x {} rayon threads, {n} points, {SWEEPS} sweeps, last change {residual:.3e})",
            rayon::current_num_threads()
        );
    }
    Ok(())
}

/// Swaps the edge points with both neighbours, the two exchanges at once
/// from two rayon tasks.
fn exchange_halos(world: &Communicator, u: &mut [f64]) -> courier::Result<()> {
    let (rank, size) = (world.rank(), world.size());
    let (left_ghost, rest) = u.split_at_mut(1);
    let (inner, right_ghost) = rest.split_at_mut(LOCAL);
    let (first, last) = (inner[0], inner[LOCAL - 1]);
    let (l, r) = rayon::join(
        || {
            if rank == 0 {
                return Ok(());
            }
            world
                .sendrecv(
                    &[first],
                    rank - 1,
                    LEFT_TAG,
                    left_ghost,
                    rank - 1,
                    RIGHT_TAG,
                )
                .map(|_| ())
        },
        || {
            if rank == size - 1 {
                return Ok(());
            }
            world
                .sendrecv(
                    &[last],
                    rank + 1,
                    RIGHT_TAG,
                    right_ghost,
                    rank + 1,
                    LEFT_TAG,
                )
                .map(|_| ())
        },
    );
    l.and(r)
}

/// The same relaxation on the whole grid, one thread.
fn jacobi_serial(n: usize, sweeps: usize) -> Vec<f64> {
    let mut u = vec![0f64; n];
    u[0] = 1.0;
    let mut next = u.clone();
    for _ in 0..sweeps {
        next[0] = u[0];
        next[n - 1] = u[n - 1];
        for i in 1..n - 1 {
            next[i] = 0.5 * (u[i - 1] + u[i + 1]);
        }
        std::mem::swap(&mut u, &mut next);
    }
    u
}
