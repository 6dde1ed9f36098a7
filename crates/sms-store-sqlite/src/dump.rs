//! The whole store as a [`Dump`], for `sms-over-xmpp migrate-store`.

use crate::errors::err;
use crate::SqliteStore;
use sms_gateway_core::store::{Dump, LastChat, StoreError};

impl SqliteStore {
    /// Everything the store holds, ids kept. Read in one transaction, so
    /// it is consistent even while a gateway writes.
    pub fn dump(&self) -> Result<Dump, StoreError> {
        let mut c = self.conn();
        let tx = c.transaction().map_err(err)?;
        let mut d = Dump::default();
        macro_rules! rows {
            ($sql:expr, $row:expr) => {{
                let mut q = tx.prepare($sql).map_err(err)?;
                let rows = q.query_map([], $row).map_err(err)?;
                rows.collect::<Result<Vec<_>, _>>().map_err(err)?
            }};
        }
        d.chats = rows!(
            "SELECT ticket, created, sent, data FROM chats ORDER BY ticket",
            |r| Ok((
                r.get::<_, i64>(0)? as u64,
                r.get::<_, i64>(1)? as u64,
                r.get::<_, i64>(2)? != 0,
                r.get(3)?
            ))
        );
        // The map keeps only a key per pair: the pairs are the ids of the
        // chats it names whose keys it still holds.
        d.sent_ids = rows!(
            concat!(
                "SELECT json_extract(c.data, '$.account') AS account, ids.value AS id, c.ticket",
                sent_pairs!(from),
                "JOIN sent_ids AS s ON s.key =",
                sent_pairs!(key),
                "AND s.ticket = c.ticket ORDER BY c.ticket, id"
            ),
            |r| Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? as u64))
        );
        d.inbound = rows!(
            "SELECT id, account, carrier_id, received, delivered, data FROM inbound ORDER BY id",
            |r| Ok((
                r.get::<_, i64>(0)? as u64,
                r.get(1)?,
                r.get(2)?,
                r.get::<_, i64>(3)? as u64,
                r.get::<_, i64>(4)? != 0,
                r.get(5)?
            ))
        );
        d.seen_keyed = rows!("SELECT key, received FROM seen_expired ORDER BY key", |r| {
            Ok((r.get(0)?, r.get::<_, i64>(1)? as u64))
        });
        d.last_chats = rows!(
            "SELECT user, contact_jid, created, preview FROM last_chat ORDER BY user",
            |r| Ok(LastChat {
                user: r.get(0)?,
                contact_jid: r.get(1)?,
                created: r.get::<_, i64>(2)? as u64,
                preview: r.get(3)?,
            })
        );
        d.meta = rows!("SELECT key, value FROM meta ORDER BY key", |r| Ok((
            r.get(0)?,
            r.get::<_, i64>(1)? as u64
        )));
        d.entries = rows!(
            "SELECT kind, key, value FROM entries ORDER BY kind, key",
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        );
        drop(tx);
        Ok(d)
    }
}
