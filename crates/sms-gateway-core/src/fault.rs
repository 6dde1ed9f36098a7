//! A fault hook for the fault suite (feature `fault-injection`): makes the
//! next turn of a process's loop panic, so tests can check that the
//! supervisor restarts it and that nothing queued for it is lost. Inert
//! unless a test arms it; nothing outside the process can.

use std::sync::atomic::{AtomicBool, Ordering};

/// The processes that can be made to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Process {
    /// The Gateway.
    Gateway,
    /// The PSTN process.
    Pstn,
    /// The XMPP process.
    Xmpp,
    /// The Gateway, while handling one event in the middle of a batch.
    GatewayEvent,
}

static ARMED: [AtomicBool; 4] = [
    AtomicBool::new(false),
    AtomicBool::new(false),
    AtomicBool::new(false),
    AtomicBool::new(false),
];

/// Makes `p` panic at its next loop turn.
pub fn arm(p: Process) {
    ARMED[p as usize].store(true, Ordering::SeqCst);
}

/// Whether `p` is armed and has not tripped yet.
pub fn armed(p: Process) -> bool {
    ARMED[p as usize].load(Ordering::SeqCst)
}

/// Called by each process at the top of its loop: panics once if armed.
pub fn trip(p: Process) {
    if ARMED[p as usize].swap(false, Ordering::SeqCst) {
        panic!("fault injected into the {p:?} process");
    }
}
