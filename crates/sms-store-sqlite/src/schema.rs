//! The schema, as migrations applied in order (`PRAGMA user_version`
//! counts them).

/// Schema migrations, applied in order; `PRAGMA user_version` counts them.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: chats and inbound texts.
    "CREATE TABLE chats (
        ticket INTEGER PRIMARY KEY AUTOINCREMENT,
        created INTEGER NOT NULL,
        sent INTEGER NOT NULL,
        data TEXT NOT NULL
    );
    CREATE TABLE inbound (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        account TEXT NOT NULL,
        carrier_id TEXT NOT NULL,
        received INTEGER NOT NULL,
        delivered INTEGER NOT NULL DEFAULT 0,
        data TEXT NOT NULL,
        UNIQUE (account, carrier_id)
    );
    CREATE INDEX inbound_pending ON inbound (delivered, id);",
    // 2: the receipt map, so delivery reports find their chat in the store
    // (it used to be rebuilt in memory, which grew with every text sent).
    // Rows are deleted with their chat, by key (the chat knows its ids).
    "CREATE TABLE sent_ids (
        account TEXT NOT NULL,
        carrier_id TEXT NOT NULL,
        ticket INTEGER NOT NULL,
        PRIMARY KEY (account, carrier_id)
    ) WITHOUT ROWID;
    INSERT OR IGNORE INTO sent_ids (account, carrier_id, ticket)
        SELECT json_extract(chats.data, '$.account'), ids.value, chats.ticket
        FROM chats, json_each(chats.data, '$.state.Sent.ids') AS ids
        WHERE chats.sent = 1;",
    // 3: pending inbound texts are read only at start: a scan then is
    // cheaper than keeping an index up to date on every text.
    "DROP INDEX inbound_pending;",
    // 4: each user's last chat (told after an unclean stop), and a few numbers.
    "CREATE TABLE last_chat (
        user TEXT PRIMARY KEY,
        contact_jid TEXT NOT NULL,
        created INTEGER NOT NULL,
        preview TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;",
    // 5: a carrier repeating a webhook is caught in memory (a set rebuilt
    // from this table at start, see `Seen`), not by a unique index: the
    // index was a page written with every batch, for a check the one
    // gateway on the store can make itself. The id sequence carries over.
    "CREATE TABLE inbound5 (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        account TEXT NOT NULL,
        carrier_id TEXT NOT NULL,
        received INTEGER NOT NULL,
        delivered INTEGER NOT NULL DEFAULT 0,
        data TEXT NOT NULL
    );
    INSERT INTO inbound5 (id, account, carrier_id, received, delivered, data)
        SELECT id, account, carrier_id, received, delivered, data FROM inbound;
    DELETE FROM sqlite_sequence WHERE name = 'inbound5';
    UPDATE sqlite_sequence SET name = 'inbound5' WHERE name = 'inbound';
    DROP TABLE inbound;
    ALTER TABLE inbound5 RENAME TO inbound;",
    // 6: the carrier ids of expired inbound texts, kept for
    // `store.seen_days` so a webhook replayed after its text has gone is
    // still a repeat (Twilio's and SignalWire's signatures carry no time).
    // Read only when the in-memory set misses; written at expiry.
    "CREATE TABLE seen_expired (
        account TEXT NOT NULL,
        carrier_id TEXT NOT NULL,
        received INTEGER NOT NULL,
        PRIMARY KEY (account, carrier_id)
    ) WITHOUT ROWID;
    CREATE INDEX seen_expired_received ON seen_expired (received);",
    // 7: small records kept as JSON text (`Transaction::put_entry`): users
    // who registered, what the gateway knows of their contacts, settings.
    "CREATE TABLE entries (
        kind TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (kind, key)
    ) WITHOUT ROWID;",
    // 8: expired pairs kept as their 64-bit `seen_key` (a function the
    // store registers) in a rowid table, a fifth of the text rows' size:
    // a lookup's pages stay in the cache, and a copy of a chunk of pairs into
    // the table writes a fifth of the pages. SQLite cannot give the pairs
    // back any more, so `migrate-store` carries the keys.
    "CREATE TABLE seen8 (key INTEGER PRIMARY KEY, received INTEGER NOT NULL);
    INSERT OR IGNORE INTO seen8 (key, received)
        SELECT seen_key(account, carrier_id), received FROM seen_expired;
    DROP TABLE seen_expired;
    ALTER TABLE seen8 RENAME TO seen_expired;
    CREATE INDEX seen_expired_received ON seen_expired (received);",
    // 9: the receipt map keyed the same way (#30). Each sent text adds a
    // row at a random place (carrier ids look random), so its pages are
    // the ones a commit writes and the cache misses: rows of 10 bytes
    // instead of about 60 make it a sixth of the pages. A key names its
    // chat; the chat's own ids and account confirm it (`find_sent`).
    "CREATE TABLE sent9 (key INTEGER PRIMARY KEY, ticket INTEGER NOT NULL);
    INSERT OR IGNORE INTO sent9 (key, ticket)
        SELECT seen_key(account, carrier_id), ticket FROM sent_ids;
    DROP TABLE sent_ids;
    ALTER TABLE sent9 RENAME TO sent_ids;",
];
