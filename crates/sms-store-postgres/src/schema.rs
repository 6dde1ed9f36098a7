//! The schema, as migrations applied in order; `sox_schema` counts them.
//! Migrations run in one transaction under an advisory lock, so two
//! gateways starting at once on a new database do not both apply them.

use crate::err;
use postgres::Client;
use sms_gateway_core::store::{StoreError, StoreErrorKind};

/// The advisory lock held while migrating (any number; ours).
const MIGRATION_LOCK: i64 = 0x736d_735f_786d_7070; // "sms_xmpp"

/// Schema migrations, applied in order.
const MIGRATIONS: &[&str] = &[
    // 1: everything the SQLite store keeps, with PostgreSQL's types. A
    // unique key on (account, carrier_id) makes an inbound repeat a
    // repeat whoever stored the first; the receipt map goes with its chat.
    "CREATE TABLE chats (
        ticket BIGSERIAL PRIMARY KEY,
        created BIGINT NOT NULL,
        sent BOOLEAN NOT NULL,
        data TEXT NOT NULL
    );
    CREATE TABLE sent_ids (
        account TEXT NOT NULL,
        carrier_id TEXT NOT NULL,
        ticket BIGINT NOT NULL REFERENCES chats (ticket) ON DELETE CASCADE,
        PRIMARY KEY (account, carrier_id)
    );
    CREATE INDEX sent_ids_ticket ON sent_ids (ticket);
    CREATE TABLE inbound (
        id BIGSERIAL PRIMARY KEY,
        account TEXT NOT NULL,
        carrier_id TEXT NOT NULL,
        received BIGINT NOT NULL,
        delivered BOOLEAN NOT NULL DEFAULT FALSE,
        data TEXT NOT NULL,
        UNIQUE (account, carrier_id)
    );
    CREATE INDEX inbound_pending ON inbound (id) WHERE NOT delivered;
    CREATE TABLE seen_expired (
        account TEXT NOT NULL,
        carrier_id TEXT NOT NULL,
        received BIGINT NOT NULL,
        PRIMARY KEY (account, carrier_id)
    );
    CREATE INDEX seen_expired_received ON seen_expired (received);
    CREATE TABLE last_chat (
        usr TEXT PRIMARY KEY,
        contact_jid TEXT NOT NULL,
        created BIGINT NOT NULL,
        preview TEXT NOT NULL
    );
    CREATE TABLE meta (key TEXT PRIMARY KEY, value BIGINT NOT NULL);
    CREATE TABLE entries (
        kind TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (kind, key)
    );",
    // 2: several instances on one database ([cluster]). Chats and inbound
    // texts are marked with the instance that took them (NULL: a gateway
    // alone); each instance holds a lease in sox_instances; a user's last
    // chat is kept per instance, so only the users of an instance that
    // died are told.
    "ALTER TABLE chats ADD COLUMN owner TEXT;
    ALTER TABLE inbound ADD COLUMN owner TEXT;
    CREATE INDEX chats_sending ON chats (owner) WHERE NOT sent;
    CREATE INDEX inbound_pending_owner ON inbound (owner) WHERE NOT delivered;
    ALTER TABLE last_chat ADD COLUMN owner TEXT NOT NULL DEFAULT '';
    ALTER TABLE last_chat DROP CONSTRAINT last_chat_pkey;
    ALTER TABLE last_chat ADD PRIMARY KEY (usr, owner);
    CREATE TABLE sox_instances (id TEXT PRIMARY KEY, expires BIGINT NOT NULL);",
    // 3: delivery reports that reached an instance before the sender
    // recorded its send's result.
    "CREATE TABLE early_reports (
        account TEXT NOT NULL,
        carrier_id TEXT NOT NULL,
        status TEXT NOT NULL,
        at BIGINT NOT NULL,
        PRIMARY KEY (account, carrier_id)
    );",
    // 4: expired pairs a SQLite store kept only as their `seen_key`
    // (`migrate-store` carries them as they are): still repeats here.
    "CREATE TABLE seen_keyed (key BIGINT PRIMARY KEY, received BIGINT NOT NULL);
    CREATE INDEX seen_keyed_received ON seen_keyed (received);",
];

/// Brings the schema up to date; refuses a schema newer than this program.
pub(crate) fn migrate(c: &mut Client) -> Result<(), StoreError> {
    let mut tx = c.transaction().map_err(err)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .map_err(err)?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS sox_schema (version INTEGER NOT NULL)")
        .map_err(err)?;
    let version: i32 = tx
        .query_opt("SELECT version FROM sox_schema", &[])
        .map_err(err)?
        .map(|r| r.get(0))
        .unwrap_or(0);
    let known = MIGRATIONS.len() as i32;
    if version > known {
        return Err(StoreError::new(
            StoreErrorKind::Corrupt,
            format!(
                "the database's schema is version {version}, newer than this program's {known}: \
                 run the newer sms-over-xmpp"
            ),
        ));
    }
    for (i, m) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.batch_execute(m).map_err(err)?;
        tracing::info!(version = i + 1, "store schema migrated");
    }
    if version == 0 {
        tx.execute("INSERT INTO sox_schema (version) VALUES ($1)", &[&known])
            .map_err(err)?;
    } else if version < known {
        tx.execute("UPDATE sox_schema SET version = $1", &[&known])
            .map_err(err)?;
    }
    tx.commit().map_err(err)
}
