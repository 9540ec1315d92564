//! Passes a token around all ranks: `courier run -n 4 target/debug/examples/ring`.
//!
//! Rank 0 starts a counter; each rank adds its rank number and passes it on.
//! After one lap rank 0 checks that the total is 0 + 1 + ... + (n - 1).

fn main() -> courier::Result<()> {
    let universe = courier::init()?;
    let world = universe.world();
    let (rank, size) = (world.rank(), world.size());
    let next = (rank + 1) % size;
    let prev = (rank + size - 1) % size;
    let mut token = [0u64];
    if rank == 0 {
        world.send(&token, next, 0)?;
        world.recv(&mut token, prev, 0)?;
        let expected = (size * (size - 1) / 2) as u64;
        println!("ring of {size}: token = {} (expected {expected})", token[0]);
        if token[0] != expected {
            std::process::exit(1);
        }
    } else {
        world.recv(&mut token, prev, 0)?;
        token[0] += rank as u64;
        world.send(&token, next, 0)?;
    }
    Ok(())
}
