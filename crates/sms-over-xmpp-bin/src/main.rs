//! `sms-over-xmpp`: see the crate's library for everything.

fn main() -> std::process::ExitCode {
    sms_over_xmpp_bin::main()
}
