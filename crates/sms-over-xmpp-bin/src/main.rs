//! `sms-over-xmpp`: see the crate's library for everything.

/// mimalloc, not glibc's malloc: at about 240 allocations per round trip,
/// glibc's malloc and free were a tenth of the gateway's CPU (#30,
/// docs/benchmarks.md step 27). Version 2, without transparent huge pages
/// (with them, peak RSS went from 18 to 29 MiB at the benchmark's load).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc v2's `mi_option_arena_eager_commit` (`include/mimalloc.h`).
const ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
/// mimalloc v2's `mi_option_purge_delay`.
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn main() -> std::process::ExitCode {
    // Memory committed as it is used and given back as soon as it is free
    // (mimalloc's defaults: the arena committed up front, freed pages kept
    // 10 ms): 0.6 MiB less peak RSS at the benchmark's load, for no CPU
    // that shows.
    // SAFETY: plain C calls with valid option numbers, made before any
    // thread is started (they are not thread-safe).
    // mimalloc's own variables (`MIMALLOC_ARENA_EAGER_COMMIT`,
    // `MIMALLOC_PURGE_DELAY`) still win when set.
    let unset = |name: &str| std::env::var_os(name).is_none();
    unsafe {
        if unset("MIMALLOC_ARENA_EAGER_COMMIT") {
            libmimalloc_sys::mi_option_set(ARENA_EAGER_COMMIT, 0);
        }
        if unset("MIMALLOC_PURGE_DELAY") {
            libmimalloc_sys::mi_option_set(PURGE_DELAY, 0);
        }
    }
    sms_over_xmpp_bin::main()
}
