//! Filling a new database from another store's [`Dump`] (`sms-over-xmpp
//! migrate-store`), ids kept, in one transaction.

use crate::{err, PostgresStore};
use sms_gateway_core::store::{Dump, StoreError, StoreErrorKind};

impl PostgresStore {
    /// Copies `dump` into this database, which must hold no store yet; all
    /// of it or, on any error, none. The id sequences continue after the
    /// highest ids copied.
    pub fn import(&self, dump: Dump) -> Result<(), StoreError> {
        self.worker.run(move |c| {
            let mut tx = c.client.transaction().map_err(err)?;
            let held: i64 = tx
                .query_one(
                    "SELECT (SELECT count(*) FROM chats) + (SELECT count(*) FROM inbound)
                          + (SELECT count(*) FROM entries) + (SELECT count(*) FROM last_chat)",
                    &[],
                )
                .map_err(err)?
                .get(0);
            if held > 0 {
                return Err(StoreError::new(
                    StoreErrorKind::Other,
                    "the database already holds a store: migrate into an empty one",
                ));
            }
            for (ticket, created, sent, data) in &dump.chats {
                tx.execute(
                    "INSERT INTO chats (ticket, created, sent, data) VALUES ($1, $2, $3, $4)",
                    &[&(*ticket as i64), &(*created as i64), sent, data],
                )
                .map_err(err)?;
            }
            for (account, carrier_id, ticket) in &dump.sent_ids {
                tx.execute(
                    "INSERT INTO sent_ids (account, carrier_id, ticket) VALUES ($1, $2, $3)
                     ON CONFLICT DO NOTHING",
                    &[account, carrier_id, &(*ticket as i64)],
                )
                .map_err(err)?;
            }
            for (id, account, carrier_id, received, delivered, data) in &dump.inbound {
                tx.execute(
                    "INSERT INTO inbound (id, account, carrier_id, received, delivered, data)
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (account, carrier_id) DO NOTHING",
                    &[&(*id as i64), account, carrier_id, &(*received as i64), delivered, data],
                )
                .map_err(err)?;
            }
            for (account, carrier_id, received) in &dump.seen_expired {
                tx.execute(
                    "INSERT INTO seen_expired (account, carrier_id, received) VALUES ($1, $2, $3)
                     ON CONFLICT DO NOTHING",
                    &[account, carrier_id, &(*received as i64)],
                )
                .map_err(err)?;
            }
            for (key, received) in &dump.seen_keyed {
                tx.execute(
                    "INSERT INTO seen_keyed (key, received) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    &[key, &(*received as i64)],
                )
                .map_err(err)?;
            }
            for l in &dump.last_chats {
                tx.execute(
                    "INSERT INTO last_chat (usr, contact_jid, created, preview) VALUES ($1, $2, $3, $4)",
                    &[&l.user, &l.contact_jid, &(l.created as i64), &l.preview],
                )
                .map_err(err)?;
            }
            for (key, value) in &dump.meta {
                tx.execute(
                    "INSERT INTO meta (key, value) VALUES ($1, $2)
                     ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                    &[key, &(*value as i64)],
                )
                .map_err(err)?;
            }
            for (kind, key, value) in &dump.entries {
                tx.execute(
                    "INSERT INTO entries (kind, key, value) VALUES ($1, $2, $3)",
                    &[kind, key, value],
                )
                .map_err(err)?;
            }
            // New tickets and ids continue after the copied ones.
            tx.batch_execute(
                "SELECT setval(pg_get_serial_sequence('chats', 'ticket'),
                               GREATEST((SELECT max(ticket) FROM chats), 1),
                               (SELECT max(ticket) FROM chats) IS NOT NULL);
                 SELECT setval(pg_get_serial_sequence('inbound', 'id'),
                               GREATEST((SELECT max(id) FROM inbound), 1),
                               (SELECT max(id) FROM inbound) IS NOT NULL);",
            )
            .map_err(err)?;
            tx.commit().map_err(err)
        })
    }

    /// Everything this store holds, as [`PostgresStore::import`] takes it.
    pub fn dump(&self) -> Result<Dump, StoreError> {
        self.worker.run(|c| {
            let mut tx = c
                .client
                .build_transaction()
                .isolation_level(postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .map_err(err)?;
            let mut d = Dump::default();
            for r in tx
                .query("SELECT ticket, created, sent, data FROM chats ORDER BY ticket", &[])
                .map_err(err)?
            {
                d.chats.push((
                    r.get::<_, i64>(0) as u64,
                    r.get::<_, i64>(1) as u64,
                    r.get(2),
                    r.get(3),
                ));
            }
            for r in tx
                .query(
                    "SELECT account, carrier_id, ticket FROM sent_ids ORDER BY ticket, carrier_id",
                    &[],
                )
                .map_err(err)?
            {
                d.sent_ids.push((r.get(0), r.get(1), r.get::<_, i64>(2) as u64));
            }
            for r in tx
                .query(
                    "SELECT id, account, carrier_id, received, delivered, data FROM inbound ORDER BY id",
                    &[],
                )
                .map_err(err)?
            {
                d.inbound.push((
                    r.get::<_, i64>(0) as u64,
                    r.get(1),
                    r.get(2),
                    r.get::<_, i64>(3) as u64,
                    r.get(4),
                    r.get(5),
                ));
            }
            for r in tx
                .query(
                    "SELECT account, carrier_id, received FROM seen_expired ORDER BY account, carrier_id",
                    &[],
                )
                .map_err(err)?
            {
                d.seen_expired
                    .push((r.get(0), r.get(1), r.get::<_, i64>(2) as u64));
            }
            for r in tx
                .query("SELECT key, received FROM seen_keyed ORDER BY key", &[])
                .map_err(err)?
            {
                d.seen_keyed.push((r.get(0), r.get::<_, i64>(1) as u64));
            }
            for r in tx
                .query(
                    "SELECT DISTINCT ON (usr) usr, contact_jid, created, preview FROM last_chat
                     ORDER BY usr, created DESC",
                    &[],
                )
                .map_err(err)?
            {
                d.last_chats.push(sms_gateway_core::store::LastChat {
                    user: r.get(0),
                    contact_jid: r.get(1),
                    created: r.get::<_, i64>(2) as u64,
                    preview: r.get(3),
                });
            }
            for r in tx
                .query("SELECT key, value FROM meta ORDER BY key", &[])
                .map_err(err)?
            {
                d.meta.push((r.get(0), r.get::<_, i64>(1) as u64));
            }
            for r in tx
                .query(
                    "SELECT kind, key, value FROM entries ORDER BY kind, key COLLATE \"C\"",
                    &[],
                )
                .map_err(err)?
            {
                d.entries.push((r.get(0), r.get(1), r.get(2)));
            }
            tx.commit().map_err(err)?;
            Ok(d)
        })
    }
}
