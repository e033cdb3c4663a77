"""The schema step of mail, notices, the name and e-mail fields, sessions' ids and
policy versions (store/notices.py, store/contact.py): only this feature's tables and
columns, so it merges with other features' steps in any order."""

MIGRATION = [
    # contact fields (store/contact.py): sealed like the other personal fields; the
    # address's blind index is unique (NULLs are not: accounts without one)
    "ALTER TABLE users ADD COLUMN name_sealed BLOB",
    "ALTER TABLE users ADD COLUMN email_sealed BLOB",
    "ALTER TABLE users ADD COLUMN email_index TEXT",
    "ALTER TABLE users ADD COLUMN email_verified INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE users ADD COLUMN policy_version TEXT",
    "CREATE UNIQUE INDEX users_email_index ON users(email_index)",
    # a mailed code (verify the address, reset the password): hashed, expiring
    """CREATE TABLE email_codes (
        user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        purpose TEXT NOT NULL,
        code_hash TEXT NOT NULL,
        expires_at REAL NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (user_id, purpose)
    )""",
    """CREATE TABLE notices (
        id TEXT PRIMARY KEY,
        user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        kind TEXT NOT NULL,
        at REAL NOT NULL,
        read_at REAL,
        sealed BLOB NOT NULL
    )""",
    "CREATE INDEX notices_user ON notices(user_id, at)",
    # queued mail: an account's unsent mail goes with the account; kind: the notice's
    # (an inactivity notice's delivery starts the 30 days before deletion)
    """CREATE TABLE mail_outbox (
        id TEXT PRIMARY KEY,
        user_id TEXT REFERENCES users(id) ON DELETE CASCADE,
        created_at REAL NOT NULL,
        due_at REAL NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        claimed_until REAL,
        kind TEXT,
        sealed BLOB NOT NULL
    )""",
    "CREATE INDEX mail_outbox_due ON mail_outbox(due_at)",
    # sessions as their owner sees them: a random id apart from the token hash,
    # the device label (sealed) and when the session was last used
    "ALTER TABLE tokens ADD COLUMN session_id TEXT",
    "ALTER TABLE tokens ADD COLUMN device_sealed BLOB",
    "ALTER TABLE tokens ADD COLUMN last_used_at REAL",
    "UPDATE tokens SET session_id = lower(hex(randomblob(12)))",
    "CREATE UNIQUE INDEX tokens_session_id ON tokens(session_id)",
    """CREATE TABLE policy_versions (
        version TEXT PRIMARY KEY,
        effective_date TEXT NOT NULL,
        url TEXT NOT NULL,
        published_at REAL NOT NULL,
        text TEXT NOT NULL DEFAULT ''
    )""",
]
