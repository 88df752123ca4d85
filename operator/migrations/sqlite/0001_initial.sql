-- Veil state store, SQLite flavour. Keep in step with ../postgres/0001_initial.sql:
-- same tables, columns and constraints; only the types differ.
-- STRICT tables make SQLite reject values of the wrong type, as PostgreSQL does.
-- Timestamps are RFC 3339 text in UTC with microsecond precision.

-- Objects seen in dir mode and their generation bookkeeping.
CREATE TABLE object_records (
    kind        TEXT    NOT NULL CHECK (kind <> ''),
    namespace   TEXT    NOT NULL,
    name        TEXT    NOT NULL CHECK (name <> ''),
    uid         TEXT    NOT NULL,
    generation  INTEGER NOT NULL CHECK (generation >= 0),
    spec_hash   TEXT    NOT NULL,
    created_at  TEXT    NOT NULL,
    PRIMARY KEY (kind, namespace, name)
) STRICT;

-- Dir-mode statuses. The document is kept as the exact JSON text written, so
-- both backends return it byte for byte (JSONB would reorder keys).
CREATE TABLE statuses (
    kind        TEXT    NOT NULL CHECK (kind <> ''),
    namespace   TEXT    NOT NULL,
    name        TEXT    NOT NULL CHECK (name <> ''),
    document    TEXT    NOT NULL,
    PRIMARY KEY (kind, namespace, name)
) STRICT;

-- Load errors of the current source state, in the order they were reported.
CREATE TABLE load_errors (
    ordinal        INTEGER NOT NULL PRIMARY KEY,
    file           TEXT    NOT NULL,
    line           INTEGER,
    column_number  INTEGER,
    object         TEXT,
    path           TEXT,
    message        TEXT    NOT NULL
) STRICT;

-- The single admin token (hash only).
CREATE TABLE admin_token (
    singleton   INTEGER NOT NULL PRIMARY KEY CHECK (singleton = 1),
    token_hash  TEXT    NOT NULL,
    updated_at  TEXT    NOT NULL
) STRICT;

-- Node tokens (hash only), each bound to one node.
CREATE TABLE node_tokens (
    id          TEXT    NOT NULL PRIMARY KEY,
    node        TEXT    NOT NULL CHECK (node <> ''),
    token_hash  TEXT    NOT NULL UNIQUE,
    created_at  TEXT    NOT NULL,
    revoked_at  TEXT
) STRICT;

-- Last applied report sequence number per (node, stream): makes traffic
-- accounting exactly-once across retried reports.
CREATE TABLE traffic_streams (
    node        TEXT    NOT NULL,
    stream      TEXT    NOT NULL,
    last_seq    INTEGER NOT NULL,
    PRIMARY KEY (node, stream)
) STRICT;

-- Traffic counters per (server, email), in bytes.
CREATE TABLE traffic_totals (
    server      TEXT    NOT NULL,
    email       TEXT    NOT NULL,
    uplink      INTEGER NOT NULL CHECK (uplink >= 0),
    downlink    INTEGER NOT NULL CHECK (downlink >= 0),
    PRIMARY KEY (server, email)
) STRICT;

-- Task-run log chunks, keyed by the run and the agent's chunk sequence number.
CREATE TABLE run_logs (
    kind        TEXT    NOT NULL,
    namespace   TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    seq         INTEGER NOT NULL,
    chunk       TEXT    NOT NULL,
    PRIMARY KEY (kind, namespace, name, seq)
) STRICT;

-- Values the operator generates once and must keep stable (VLESS ids, …).
CREATE TABLE generated_values (
    scope       TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    value       TEXT    NOT NULL,
    PRIMARY KEY (scope, name)
) STRICT;
