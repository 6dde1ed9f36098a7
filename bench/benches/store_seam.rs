//! The store seam's design call, measured (#16): the Gateway writes a
//! batch of events through one transaction. Three ways to reach SQLite:
//!
//! - **sync**: the trait as it is, called on the Gateway's thread;
//! - **async**: the same calls, each through a boxed future (what an
//!   `async_trait` store costs on top);
//! - **actor**: the store on a thread of its own, each call a message and
//!   a reply (a store process behind a channel).
//!
//! Each iteration is one batch: begin, 16 inbound texts stored, commit.

use criterion::{criterion_group, criterion_main, Criterion};
use sms_gateway_core::store::{Store, Transaction};
use sms_gateway_core::{InboundSms, PhoneNumber};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

const BATCH: usize = 16;

fn sms(n: u64) -> InboundSms {
    InboundSms {
        id: format!("SM{n:032}"),
        from: PhoneNumber::parse("+15557654321", None).unwrap(),
        to: PhoneNumber::parse("+15550001111", None).unwrap(),
        body: "a text of a usual length, about sixty characters or so".into(),
        media: vec![],
        others: vec![],
        subject: None,
    }
}

fn store() -> (tempfile::TempDir, Arc<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    let store = sms_store_sqlite::SqliteStore::open(&dir.path().join("s.db")).unwrap();
    (dir, Arc::new(store))
}

fn batch_sync(store: &dyn Store, next: &AtomicU64) {
    let mut tx = store.begin().unwrap();
    for _ in 0..BATCH {
        let n = next.fetch_add(1, Ordering::Relaxed);
        tx.insert_inbound("main", &sms(n), 1).unwrap();
    }
    tx.commit().unwrap();
}

async fn batch_async(store: &dyn Store, next: &AtomicU64) {
    let mut tx = store.begin().unwrap();
    for _ in 0..BATCH {
        let n = next.fetch_add(1, Ordering::Relaxed);
        let fut: std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send + '_>> =
            Box::pin(async { tx.insert_inbound("main", &sms(n), 1) });
        fut.await.unwrap();
    }
    tx.commit().unwrap();
}

/// A request to the store's own thread.
enum Call {
    Begin,
    Insert(InboundSms),
    Commit,
}

fn actor(
    store: Arc<dyn Store>,
) -> std::sync::mpsc::Sender<(Call, tokio::sync::oneshot::Sender<()>)> {
    let (tx, rx) = std::sync::mpsc::channel::<(Call, tokio::sync::oneshot::Sender<()>)>();
    std::thread::spawn(move || {
        let mut open: Option<Box<dyn Transaction + '_>> = None;
        while let Ok((call, reply)) = rx.recv() {
            match call {
                Call::Begin => open = Some(store.begin().unwrap()),
                Call::Insert(s) => {
                    open.as_mut()
                        .unwrap()
                        .insert_inbound("main", &s, 1)
                        .unwrap();
                }
                Call::Commit => open.take().unwrap().commit().unwrap(),
            }
            let _ = reply.send(());
        }
    });
    tx
}

async fn batch_actor(
    to: &std::sync::mpsc::Sender<(Call, tokio::sync::oneshot::Sender<()>)>,
    next: &AtomicU64,
) {
    let call = |c| {
        let (reply, done) = tokio::sync::oneshot::channel();
        to.send((c, reply)).unwrap();
        done
    };
    call(Call::Begin).await.unwrap();
    for _ in 0..BATCH {
        let n = next.fetch_add(1, Ordering::Relaxed);
        call(Call::Insert(sms(n))).await.unwrap();
    }
    call(Call::Commit).await.unwrap();
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let next = AtomicU64::new(0);
    let (_dir, s) = store();
    c.bench_function("store batch of 16: sync", |b| {
        b.iter(|| batch_sync(s.as_ref(), &next))
    });
    let (_dir2, s2) = store();
    c.bench_function("store batch of 16: async (boxed future per call)", |b| {
        b.iter(|| rt.block_on(batch_async(s2.as_ref(), &next)))
    });
    let (_dir3, s3) = store();
    let to = actor(s3);
    c.bench_function(
        "store batch of 16: actor (own thread, a message per call)",
        |b| b.iter(|| rt.block_on(batch_actor(&to, &next))),
    );
}

criterion_group!(store_seam, benches);
criterion_main!(store_seam);
