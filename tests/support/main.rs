//! The `sms-over-xmpp` binary, built inside the test package so the suites
//! that kill and restart it (`CARGO_BIN_EXE_sms-over-xmpp-under-test`) always
//! run the current code. Same `main` as the real one.

fn main() -> std::process::ExitCode {
    sms_over_xmpp_bin::main()
}
