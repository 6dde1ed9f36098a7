//! `LISTEN sox_work` on a connection of its own, on a thread of its own:
//! each notification (another instance released work for one with a link)
//! wakes the Gateway, which then takes it ([`sms_gateway_core::store::Store::adopt`]).
//! The thread ends when the store is dropped; a lost connection is made
//! again a second later (the lease renewal takes what was released
//! meanwhile).

use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::Notify;

/// How often the thread looks whether the store is gone.
const POLL: Duration = Duration::from_secs(1);

/// Starts listening; the returned handle is notified.
pub(crate) fn start(config: postgres::Config) -> Arc<Notify> {
    let notify = Arc::new(Notify::new());
    let weak = Arc::downgrade(&notify);
    let spawned = std::thread::Builder::new()
        .name("store-listen".into())
        .spawn(move || run(config, weak));
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the store's listener: released work waits for the lease renewal");
    }
    notify
}

fn run(config: postgres::Config, notify: Weak<Notify>) {
    while notify.strong_count() > 0 {
        let mut client = match config.connect(postgres::NoTls) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %crate::describe(&e), "the store's listener cannot connect; trying again");
                std::thread::sleep(POLL);
                continue;
            }
        };
        if let Err(e) = client.batch_execute("LISTEN sox_work") {
            tracing::warn!(error = %crate::describe(&e), "the store's listener cannot listen; trying again");
            std::thread::sleep(POLL);
            continue;
        }
        loop {
            let Some(n) = notify.upgrade() else {
                return;
            };
            let next = {
                let mut notifications = client.notifications();
                let mut waiting = notifications.timeout_iter(POLL);
                let next = postgres::fallible_iterator::FallibleIterator::next(&mut waiting);
                next.map(|n| n.is_some())
            };
            match next {
                Ok(true) => n.notify_one(),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %crate::describe(&e), "the store's listener lost its connection");
                    break;
                }
            }
            if client.is_closed() {
                break;
            }
        }
        std::thread::sleep(POLL);
    }
}
