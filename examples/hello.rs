//! Hello world, like OSU's `osu_hello`: `courier run -n 4 target/release/examples/hello`.

fn main() -> courier::Result<()> {
    let universe = courier::init()?;
    let world = universe.world();
    println!(
        "Hello from rank {} of {} on {}",
        world.rank(),
        world.size(),
        universe.processor_name()
    );
    Ok(())
}
