//! Hands the linker the gateway's link order (#30): the functions a
//! benchmark run executes, hottest first (`link/functions.order`, made by
//! `bench/link-order.sh`), so the code the gateway runs sits together
//! instead of spread over the whole binary: about 6 MiB less resident
//! memory (docs/performance.md).
//!
//! Only where the linker is known to be LLD, which takes
//! `--symbol-ordering-file`: release builds for x86_64 Linux (GNU) with
//! Rust 1.90 or later, which links with its own LLD there, and no linker
//! chosen in RUSTFLAGS or cargo's config. Anywhere else, or with
//! `SMS_XMPP_LINK_ORDER=0`, the binary links as it would without this.

use std::env;
use std::path::Path;
use std::process::Command;

fn main() {
    let dir = env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let order = Path::new(&dir).join("link/functions.order");
    println!("cargo:rerun-if-changed={}", order.display());
    println!("cargo:rerun-if-env-changed=SMS_XMPP_LINK_ORDER");
    if order.exists() && linker_is_rusts_lld() {
        println!(
            "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        // A name this build does not have (a dependency updated since the
        // file was made) is skipped, not an error.
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
}

/// Whether this is a release build linked by Rust's own LLD, with the
/// order not turned off.
fn linker_is_rusts_lld() -> bool {
    let var = |k: &str| env::var(k).unwrap_or_default();
    if var("SMS_XMPP_LINK_ORDER") == "0"
        || var("PROFILE") != "release"
        || var("TARGET") != "x86_64-unknown-linux-gnu"
        // A linker chosen in cargo's config, or any link flag in RUSTFLAGS.
        || env::var_os("RUSTC_LINKER").is_some()
        || var("CARGO_ENCODED_RUSTFLAGS").contains("link")
    {
        return false;
    }
    // Rust links x86_64 Linux binaries with its own LLD from 1.90 on.
    let version = Command::new(env::var_os("RUSTC").unwrap_or_else(|| "rustc".into()))
        .arg("-V")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let minor = version
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.strip_prefix("1."))
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.parse::<u32>().ok());
    minor.is_some_and(|m| m >= 90)
}
