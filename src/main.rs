//! The `redrive` binary: the application in `src/app/` runs and maps its error to an exit code.

// glibc malloc was a fifth of the member's CPU time in the drain profile (benches/README.md);
// mimalloc's thread-local free lists fit the allocate-here, free-on-another-worker pattern of
// tasks moving from reader to executor to settler.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    redrive::run_app()
}
