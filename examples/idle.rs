//! An idle job, for measuring what a rank costs at rest: every rank
//! initializes, meets the others in a barrier, then sleeps (`SECONDS`, by
//! default 3) and meets them again. Rank 0 prints `idle` once all ranks are
//! asleep, for `scripts/startup_memory.sh` to sample the job's memory.
//!
//! `courier run -n 1024 --oversubscribe target/release/examples/idle 5`

fn main() -> courier::Result<()> {
    let secs: f64 = match std::env::args().nth(1) {
        Some(s) => s
            .parse()
            .map_err(|_| courier::Error::InvalidArgument(format!("not seconds: {s:?}")))?,
        None => 3.0,
    };
    let universe = courier::init()?;
    let world = universe.world();
    world.barrier()?;
    if world.rank() == 0 {
        println!("idle");
    }
    std::thread::sleep(std::time::Duration::from_secs_f64(secs));
    world.barrier()?;
    Ok(())
}
