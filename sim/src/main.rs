//! `deeb-sim`: seeded fault-injection runs of the real server under madsim.
//!
//! Build with `RUSTFLAGS="--cfg madsim"` into its own target directory:
//! `RUSTFLAGS="--cfg madsim" CARGO_TARGET_DIR=target-sim cargo run --release -p deeb-sim -- run --seeds 100`

#[cfg(madsim)]
mod cli;

#[cfg(madsim)]
fn main() -> std::process::ExitCode {
    cli::main()
}

#[cfg(not(madsim))]
fn main() -> std::process::ExitCode {
    eprintln!(
        "deeb-sim runs only in a simulation build:\n  \
         RUSTFLAGS=\"--cfg madsim\" CARGO_TARGET_DIR=target-sim cargo run --release -p deeb-sim -- run --seeds 100"
    );
    std::process::ExitCode::from(2)
}
