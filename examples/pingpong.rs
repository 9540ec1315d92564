//! Ping-pong between ranks 0 and 1: `courier run -n 2 target/debug/examples/pingpong [bytes] [iters]`.
//!
//! Prints the one-way latency for the given message size.

fn main() -> courier::Result<()> {
    let universe = courier::init()?;
    let world = universe.world();
    let mut args = std::env::args().skip(1);
    let bytes: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(8);
    let iters: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    if world.size() < 2 {
        eprintln!("pingpong needs at least 2 ranks");
        return Ok(());
    }
    let mut buf = vec![0u8; bytes];
    let start = std::time::Instant::now();
    for i in 0..iters {
        match world.rank() {
            0 => {
                buf.fill(i as u8);
                world.send(&buf, 1, 1)?;
                world.recv(&mut buf, 1, 1)?;
                assert!(buf.iter().all(|&b| b == i as u8 ^ 0xff), "corrupt reply");
            }
            1 => {
                world.recv(&mut buf, 0, 1)?;
                buf.iter_mut().for_each(|b| *b ^= 0xff);
                world.send(&buf, 0, 1)?;
            }
            _ => {}
        }
    }
    if world.rank() == 0 {
        let us = start.elapsed().as_secs_f64() * 1e6 / (2.0 * iters as f64);
        println!("{bytes} bytes: {us:.2} us one-way over {iters} round trips");
    }
    Ok(())
}
