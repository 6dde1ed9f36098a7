//! The writes a transaction makes (`SqliteTx` delegates to these), and
//! the reads on its hot path.

use crate::errors::err;
use crate::SqliteStore;
use rusqlite::{params, Connection, OptionalExtension};
use sms_gateway_core::store::{
    seen_key, ChatRecord, ChatState, LastChat, StoreError, StoreErrorKind,
};
use sms_gateway_core::InboundSms;

/// The SQL deleting the receipt-map rows of the chats a `WHERE` on `chats c`
/// picks, by key (each chat lists its ids); built at compile time.
macro_rules! forget_sent_ids {
    ($where:literal) => {
        concat!(
            "DELETE FROM sent_ids WHERE key IN (SELECT",
            sent_pairs!(key),
            sent_pairs!(from),
            $where,
            ")"
        )
    };
}

fn is_sent(chat: &ChatRecord) -> i64 {
    i64::from(matches!(chat.state, ChatState::Sent { .. }))
}

/// Adds a sent chat's carrier ids to the receipt map. Called only when a
/// chat becomes sent: its ids do not change after that, and ids dropped
/// since (parts reported delivered) must stay dropped.
fn index_sent(c: &Connection, ticket: u64, chat: &ChatRecord) -> Result<(), StoreError> {
    if let ChatState::Sent { ids, .. } = &chat.state {
        let mut q = c
            .prepare_cached("INSERT OR IGNORE INTO sent_ids (key, ticket) VALUES (?1, ?2)")
            .map_err(err)?;
        for id in ids {
            q.execute(params![seen_key(&chat.account, id), ticket as i64])
                .map_err(err)?;
        }
    }
    Ok(())
}

/// Keeps `last` as its user's last chat.
fn put_last_chat(c: &Connection, last: &LastChat) -> Result<(), StoreError> {
    c.prepare_cached(
        "INSERT INTO last_chat (user, contact_jid, created, preview) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (user) DO UPDATE SET
            contact_jid = excluded.contact_jid, created = excluded.created, preview = excluded.preview",
    )
    .and_then(|mut q| {
        q.execute(params![
            last.user,
            last.contact_jid,
            last.created as i64,
            last.preview
        ])
    })
    .map(drop)
    .map_err(err)
}

impl SqliteStore {
    /// Forgets the open batch's last chats (it is being rolled back).
    fn forget_last_chats(&self) {
        self.last_chats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    pub(crate) fn insert_chat(&self, chat: &ChatRecord) -> Result<u64, StoreError> {
        let data = serde_json::to_string(chat).map_err(err)?;
        let c = self.writer();
        c.prepare_cached("INSERT INTO chats (created, sent, data) VALUES (?1, ?2, ?3)")
            .and_then(|mut q| q.execute(params![chat.created as i64, is_sent(chat), data]))
            .map_err(err)?;
        let ticket = c.last_insert_rowid() as u64;
        index_sent(&c, ticket, chat)?;
        let last = LastChat::of(chat);
        if c.is_autocommit() {
            put_last_chat(&c, &last)?;
        } else {
            // Only the batch's last chat of each user is kept: written at
            // the commit, once.
            let mut batch = self.last_chats.lock().unwrap_or_else(|p| p.into_inner());
            batch.insert(last.user.clone(), last);
        }
        Ok(ticket)
    }
    pub(crate) fn update_chat(&self, ticket: u64, chat: &ChatRecord) -> Result<(), StoreError> {
        let data = serde_json::to_string(chat).map_err(err)?;
        let c = self.writer();
        let sent = is_sent(chat);
        // The usual update, a chat becoming sent, is one statement; its ids
        // join the receipt map then.
        let was_pending = c
            .prepare_cached("UPDATE chats SET sent = ?2, data = ?3 WHERE ticket = ?1 AND sent = 0")
            .and_then(|mut q| q.execute(params![ticket as i64, sent, data]))
            .map_err(err)?
            == 1;
        if was_pending {
            return index_sent(&c, ticket, chat);
        }
        c.prepare_cached("UPDATE chats SET sent = ?2, data = ?3 WHERE ticket = ?1")
            .and_then(|mut q| q.execute(params![ticket as i64, sent, data]))
            .map(drop)
            .map_err(err)
    }
    pub(crate) fn delete_chat(&self, ticket: u64) -> Result<(), StoreError> {
        let c = self.writer();
        c.prepare_cached(forget_sent_ids!("WHERE c.ticket = ?1"))
            .and_then(|mut q| q.execute(params![ticket as i64]))
            .map_err(err)?;
        c.prepare_cached("DELETE FROM chats WHERE ticket = ?1")
            .and_then(|mut q| q.execute(params![ticket as i64]))
            .map_err(err)?;
        Ok(())
    }
    pub(crate) fn find_sent(
        &self,
        account: &str,
        carrier_id: &str,
    ) -> Result<Option<(u64, ChatRecord)>, StoreError> {
        let c = self.conn();
        let mut q = c
            .prepare_cached(
                "SELECT chats.ticket, chats.data FROM sent_ids JOIN chats USING (ticket)
                 WHERE sent_ids.key = ?1",
            )
            .map_err(err)?;
        let row = q
            .query_row(params![seen_key(account, carrier_id)], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
            })
            .optional()
            .map_err(err)?;
        let Some((ticket, data)) = row else {
            return Ok(None);
        };
        let chat: ChatRecord = serde_json::from_str(&data).map_err(|e| {
            StoreError::new(
                StoreErrorKind::Corrupt,
                format!("chat {ticket} is unreadable: {e}"),
            )
        })?;
        // The key is a hash: the chat must be this account's and hold this
        // id (another pair with the same key, odds about n / 2^64, finds
        // nothing rather than the wrong chat).
        let holds = matches!(&chat.state, ChatState::Sent { ids, .. } if ids.iter().any(|i| i == carrier_id));
        if chat.account != account || !holds {
            return Ok(None);
        }
        Ok(Some((ticket as u64, chat)))
    }
    pub(crate) fn forget_sent_id(&self, account: &str, carrier_id: &str) -> Result<(), StoreError> {
        self.writer()
            .prepare_cached("DELETE FROM sent_ids WHERE key = ?1")
            .and_then(|mut q| q.execute(params![seen_key(account, carrier_id)]))
            .map(drop)
            .map_err(err)
    }
    pub(crate) fn insert_inbound(
        &self,
        account: &str,
        sms: &InboundSms,
        now: u64,
    ) -> Result<Option<u64>, StoreError> {
        let c = self.writer();
        let mut seen = self.seen();
        let key = seen.key(account, &sms.id);
        if seen.keys.contains(&key) {
            return Ok(None);
        }
        // Looked up only when the filter cannot say no (#30).
        let disk = crate::seen::disk_key(key);
        let replayed = seen.expired.may_contain(disk)
            && c.prepare_cached("SELECT 1 FROM seen_expired WHERE key = ?1")
                .and_then(|mut q| q.exists([disk]))
                .map_err(err)?;
        if replayed {
            return Ok(None);
        }
        let data = serde_json::to_string(sms).map_err(err)?;
        c.prepare_cached(
            "INSERT INTO inbound (account, carrier_id, received, data) VALUES (?1, ?2, ?3, ?4)",
        )
        .and_then(|mut q| q.execute(params![account, sms.id, now as i64, data]))
        .map_err(err)?;
        let id = c.last_insert_rowid() as u64;
        seen.add(id, key, now, !c.is_autocommit());
        Ok(Some(id))
    }
    pub(crate) fn update_inbound(&self, id: u64, sms: &InboundSms) -> Result<(), StoreError> {
        let data = serde_json::to_string(sms).map_err(err)?;
        self.writer()
            .prepare_cached("UPDATE inbound SET data = ?2 WHERE id = ?1 AND delivered = 0")
            .and_then(|mut q| q.execute(params![id as i64, data]))
            .map_err(err)?;
        Ok(())
    }
    pub(crate) fn inbound_delivered(&self, id: u64) -> Result<(), StoreError> {
        self.writer()
            .prepare_cached("UPDATE inbound SET delivered = 1, data = '' WHERE id = ?1")
            .and_then(|mut q| q.execute(params![id as i64]))
            .map_err(err)?;
        Ok(())
    }
    pub(crate) fn expire(&self, before: u64, seen_before: u64) -> Result<usize, StoreError> {
        let c = self.writer();
        c.execute(
            "DELETE FROM seen_expired WHERE received < ?1",
            params![seen_before as i64],
        )
        .map_err(err)?;
        c.execute(
            "INSERT OR IGNORE INTO seen_expired (key, received)
             SELECT seen_key(account, carrier_id), received FROM inbound
             WHERE delivered = 1 AND received < ?1 AND received >= ?2",
            params![before as i64, seen_before as i64],
        )
        .map_err(err)?;
        c.execute(
            forget_sent_ids!("WHERE c.sent = 1 AND c.created < ?1"),
            params![before as i64],
        )
        .map_err(err)?;
        let chats = c
            .execute(
                "DELETE FROM chats WHERE sent = 1 AND created < ?1",
                params![before as i64],
            )
            .map_err(err)?;
        let mut q = c
            .prepare("DELETE FROM inbound WHERE delivered = 1 AND received < ?1 RETURNING account, carrier_id")
            .map_err(err)?;
        let mut rows = q.query(params![before as i64]).map_err(err)?;
        let mut seen = self.seen();
        let mut inbound = 0;
        while let Some(r) = rows.next().map_err(err)? {
            let key = seen.key_of_row(r)?;
            seen.keys.remove(&key);
            // Its pair may just have been copied to `seen_expired`.
            seen.expired.add(crate::seen::disk_key(key));
            inbound += 1;
        }
        Ok(chats + inbound)
    }
    pub(crate) fn set_meta(&self, key: &str, value: u64) -> Result<(), StoreError> {
        self.writer()
            .execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
                params![key, value as i64],
            )
            .map(drop)
            .map_err(err)
    }
    pub(crate) fn put_entry(
        &self,
        kind: &str,
        key: &str,
        value: Option<&str>,
    ) -> Result<(), StoreError> {
        let c = self.conn();
        match value {
            Some(v) => c.execute(
                "INSERT INTO entries (kind, key, value) VALUES (?1, ?2, ?3)
                 ON CONFLICT (kind, key) DO UPDATE SET value = excluded.value",
                (kind, key, v),
            ),
            None => c.execute(
                "DELETE FROM entries WHERE kind = ?1 AND key = ?2",
                (kind, key),
            ),
        }
        .map_err(err)?;
        Ok(())
    }

    pub(crate) fn begin_tx(&self) -> Result<(), StoreError> {
        let c = self.conn();
        if !c.is_autocommit() {
            // A Gateway that died mid-batch left it open; nothing of it was
            // let out, so it is dropped.
            tracing::warn!("rolling back a batch a previous Gateway left open");
            c.execute_batch("ROLLBACK").map_err(err)?;
        }
        let mut seen = self.seen();
        seen.rolled_back();
        self.forget_last_chats();
        c.prepare_cached("BEGIN")
            .and_then(|mut q| q.execute([]))
            .map_err(err)?;
        // Memory holds too many pairs: the oldest go to `seen_expired` in
        // this batch (and leave memory once it commits).
        if let Some(upto) = seen.to_move() {
            seen.copy_out(&c, upto)?;
            seen.moving(upto);
            if seen.expired.is_full() {
                seen.expired = crate::seen::ExpiredFilter::build(&c)?;
            }
        }
        Ok(())
    }

    /// Rolls back the open transaction (dropped without a commit).
    pub(crate) fn rollback_tx(&self) {
        let c = self.conn();
        if !c.is_autocommit() {
            if let Err(e) = c.execute_batch("ROLLBACK") {
                tracing::error!(error = %e, "cannot roll back a transaction");
            }
        }
        self.seen().rolled_back();
        self.forget_last_chats();
    }

    pub(crate) fn commit_tx(&self) -> Result<(), StoreError> {
        let c = self.conn();
        let done = self
            .last_chats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .try_for_each(|(_, last)| put_last_chat(&c, &last))
            .and_then(|()| {
                c.prepare_cached("COMMIT")
                    .and_then(|mut q| q.execute([]))
                    .map(drop)
                    .map_err(err)
            });
        // A failed COMMIT is taken as not done: the webhooks of the batch
        // are refused and their retries must not look like repeats (at
        // worst a text is then stored twice, never dropped).
        match done {
            Ok(()) => self.seen().committed(),
            Err(_) => self.seen().rolled_back(),
        }
        done
    }
}

/// Copies the pairs of inbound texts `after < id <= upto` into
/// `seen_expired`, where a repeat of them is found from now on, and notes
/// how far (`meta`), in the connection's open transaction. At start; while
/// running, [`crate::seen::Seen::copy_out`] copies from memory.
pub(crate) fn move_pairs(
    c: &rusqlite::Connection,
    after: u64,
    upto: u64,
) -> Result<(), StoreError> {
    c.prepare_cached(
        "INSERT OR IGNORE INTO seen_expired (key, received)
         SELECT seen_key(account, carrier_id), received FROM inbound WHERE id > ?1 AND id <= ?2",
    )
    .and_then(|mut q| q.execute(params![after as i64, upto as i64]))
    .map_err(err)?;
    c.prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)")
        .and_then(|mut q| q.execute(params![crate::seen::MOVED, upto as i64]))
        .map_err(err)?;
    Ok(())
}
