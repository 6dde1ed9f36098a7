//! The store's thread: it owns the connection, runs each call in order,
//! makes the connection again when it was lost, and knows whether a
//! transaction is open and whether a lost connection broke it.

use crate::err;
use postgres::types::ToSql;
use postgres::{Client, NoTls, Row, Statement};
use sms_gateway_core::store::{StoreError, StoreErrorKind};
use std::collections::HashMap;
use std::sync::mpsc;
use std::time::Duration;

type Job = Box<dyn FnOnce(&mut Conn) + Send>;

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection with its prepared statements: each statement is parsed
/// once a connection, not at every call (which would cost a round trip
/// and the server's parsing each time).
pub(crate) struct Db {
    /// The connection, for what the cache does not cover (transactions of
    /// their own: migrations, `migrate-store`).
    pub(crate) client: Client,
    cache: HashMap<&'static str, Statement>,
}

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

impl Db {
    fn statement(&mut self, sql: &'static str) -> Result<Statement, postgres::Error> {
        if let Some(s) = self.cache.get(sql) {
            return Ok(s.clone());
        }
        let s = self.client.prepare(sql)?;
        self.cache.insert(sql, s.clone());
        Ok(s)
    }

    pub(crate) fn query(
        &mut self,
        sql: &'static str,
        p: Params,
    ) -> Result<Vec<Row>, postgres::Error> {
        let s = self.statement(sql)?;
        self.client.query(&s, p)
    }

    pub(crate) fn query_opt(
        &mut self,
        sql: &'static str,
        p: Params,
    ) -> Result<Option<Row>, postgres::Error> {
        let s = self.statement(sql)?;
        self.client.query_opt(&s, p)
    }

    pub(crate) fn query_one(
        &mut self,
        sql: &'static str,
        p: Params,
    ) -> Result<Row, postgres::Error> {
        let s = self.statement(sql)?;
        self.client.query_one(&s, p)
    }

    pub(crate) fn execute(&mut self, sql: &'static str, p: Params) -> Result<u64, postgres::Error> {
        let s = self.statement(sql)?;
        self.client.execute(&s, p)
    }
}

/// The connection and the state of the transaction on it.
pub(crate) struct Conn {
    config: postgres::Config,
    client: Option<Db>,
    /// A transaction is open (between `begin` and `commit` or `rollback`).
    in_tx: bool,
    /// The open transaction's connection was lost: it fails as a whole.
    broken: bool,
}

fn lost() -> StoreError {
    StoreError::new(
        StoreErrorKind::Io,
        "PostgreSQL: the connection was lost during the transaction; none of it was kept",
    )
}

impl Conn {
    /// The connection, made (again) if there is none. In a transaction a
    /// new connection would not hold what the transaction wrote: then the
    /// transaction is broken instead.
    fn client(&mut self) -> Result<&mut Db, StoreError> {
        if self.client.as_ref().is_some_and(|d| d.client.is_closed()) {
            self.client = None;
        }
        if self.client.is_none() {
            if self.in_tx {
                self.broken = true;
                return Err(lost());
            }
            let client = self.config.connect(NoTls).map_err(err)?;
            tracing::info!("connected to PostgreSQL");
            self.client = Some(Db {
                client,
                cache: HashMap::new(),
            });
        }
        Ok(self.client.as_mut().expect("made above"))
    }

    /// `f` in the open transaction; an error of the connection breaks it.
    fn in_tx<T>(
        &mut self,
        f: impl FnOnce(&mut Db) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if !self.in_tx {
            return Err(StoreError::new(
                StoreErrorKind::Other,
                "a transaction's write with no transaction open",
            ));
        }
        if self.broken {
            return Err(lost());
        }
        let r = f(self.client()?);
        if let Err(e) = &r {
            if e.kind == StoreErrorKind::Io {
                self.broken = true;
                self.dropped_if_lost(e);
            }
        }
        r
    }

    /// Forgets the connection after an error of the connection itself, so
    /// the next call makes a new one.
    fn dropped_if_lost(&mut self, e: &StoreError) {
        if e.kind == StoreErrorKind::Io {
            self.client = None;
        }
    }

    fn begin(&mut self) -> Result<(), StoreError> {
        if self.in_tx {
            // A Gateway that died mid-batch left it open; nothing of it
            // was let out, so it is dropped.
            tracing::warn!("rolling back a batch a previous Gateway left open");
            self.rollback();
        }
        // A connection the server closed may not know it yet: its first
        // use fails. Outside a transaction nothing is lost by trying once
        // more on a new one.
        let mut tries = 0;
        loop {
            tries += 1;
            match self.client()?.client.batch_execute("BEGIN").map_err(err) {
                Ok(()) => break,
                Err(e) if e.kind == StoreErrorKind::Io && tries < 2 => self.client = None,
                Err(e) => {
                    self.dropped_if_lost(&e);
                    return Err(e);
                }
            }
        }
        self.in_tx = true;
        self.broken = false;
        Ok(())
    }

    fn rollback(&mut self) {
        if self.in_tx && !self.broken {
            if let Some(d) = self.client.as_mut().filter(|d| !d.client.is_closed()) {
                if let Err(e) = d.client.batch_execute("ROLLBACK") {
                    tracing::error!(error = %e, "cannot roll back a transaction");
                }
            }
        }
        self.in_tx = false;
        self.broken = false;
    }

    fn commit(&mut self) -> Result<(), StoreError> {
        if !self.in_tx {
            return Err(StoreError::new(
                StoreErrorKind::Other,
                "a commit with no transaction open",
            ));
        }
        if self.broken {
            self.rollback();
            return Err(lost());
        }
        let done = self
            .client
            .as_mut()
            .ok_or_else(lost)
            .and_then(|d| d.client.batch_execute("COMMIT").map_err(err));
        // Whatever the answer, the transaction is over (a failed COMMIT
        // rolls back; one whose answer was lost is taken as not done, so
        // the carrier's retry stores the text again rather than lose it).
        self.in_tx = false;
        self.broken = false;
        if let Err(e) = &done {
            self.dropped_if_lost(e);
        }
        done
    }
}

/// The handle to the store's thread.
pub(crate) struct Worker {
    jobs: mpsc::Sender<Job>,
}

impl Worker {
    /// Starts the thread and connects (an error says why it could not).
    pub(crate) fn start(mut config: postgres::Config) -> Result<Self, StoreError> {
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        config.keepalives(true);
        if config.get_application_name().is_none() {
            config.application_name("sms-over-xmpp");
        }
        let (jobs, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("store-postgres".into())
            .spawn(move || {
                let mut conn = Conn {
                    config,
                    client: None,
                    in_tx: false,
                    broken: false,
                };
                while let Ok(job) = rx.recv() {
                    job(&mut conn);
                }
            })
            .map_err(|e| {
                StoreError::new(
                    StoreErrorKind::Other,
                    format!("cannot start the store's thread: {e}"),
                )
            })?;
        let worker = Worker { jobs };
        worker.run(|_| Ok(()))?;
        Ok(worker)
    }

    /// Runs `job` on the store's thread and waits for its answer.
    fn call<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Conn) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.jobs
            .send(Box::new(move |conn| {
                let _ = tx.send(job(conn));
            }))
            .map_err(|_| StoreError::new(StoreErrorKind::Other, "the store's thread is gone"))?;
        rx.recv().map_err(|_| {
            StoreError::new(StoreErrorKind::Other, "the store's thread failed mid-call")
        })?
    }

    /// `f` on the connection, outside any transaction.
    pub(crate) fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Db) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.call(move |conn| {
            let r = f(conn.client()?);
            if let Err(e) = &r {
                conn.dropped_if_lost(e);
            }
            r
        })
    }

    /// `f` in the open transaction.
    pub(crate) fn in_tx<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Db) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.call(move |conn| conn.in_tx(f))
    }

    pub(crate) fn begin(&self) -> Result<(), StoreError> {
        self.call(Conn::begin)
    }

    pub(crate) fn commit(&self) -> Result<(), StoreError> {
        self.call(Conn::commit)
    }

    /// Rolls the open transaction back, without waiting: the next call
    /// comes after it in any case.
    pub(crate) fn rollback(&self) {
        let _ = self.jobs.send(Box::new(Conn::rollback));
    }
}
