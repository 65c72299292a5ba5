//! The `redrive` binary: parse, run, map the error to an exit code.

use clap::Parser;

// glibc malloc was a fifth of the member's CPU time in the drain profile (benches/README.md);
// mimalloc's thread-local free lists fit the allocate-here, free-on-another-worker pattern of
// tasks moving from reader to executor to settler.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = redrive::app::cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(70);
        }
    };
    if let Err(e) = runtime.block_on(redrive::app::cli::run(cli)) {
        eprintln!("error: {e}");
        std::process::exit(e.exit_code());
    }
}
