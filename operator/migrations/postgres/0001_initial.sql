-- Veil state store, PostgreSQL flavour. Keep in step with ../sqlite/0001_initial.sql:
-- same tables, columns and constraints; only the types differ.
-- Text columns use the "C" collation so ORDER BY sorts bytewise, as SQLite
-- does, whatever the database's default locale.

-- Objects seen in dir mode and their generation bookkeeping.
CREATE TABLE object_records (
    kind        TEXT COLLATE "C" NOT NULL CHECK (kind <> ''),
    namespace   TEXT COLLATE "C" NOT NULL,
    name        TEXT COLLATE "C" NOT NULL CHECK (name <> ''),
    uid         TEXT COLLATE "C" NOT NULL,
    generation  BIGINT           NOT NULL CHECK (generation >= 0),
    spec_hash   TEXT COLLATE "C" NOT NULL,
    created_at  TIMESTAMPTZ      NOT NULL,
    PRIMARY KEY (kind, namespace, name)
);

-- Dir-mode statuses. The document is kept as the exact JSON text written, so
-- both backends return it byte for byte (JSONB would reorder keys).
CREATE TABLE statuses (
    kind        TEXT COLLATE "C" NOT NULL CHECK (kind <> ''),
    namespace   TEXT COLLATE "C" NOT NULL,
    name        TEXT COLLATE "C" NOT NULL CHECK (name <> ''),
    document    TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (kind, namespace, name)
);

-- Load errors of the current source state, in the order they were reported.
CREATE TABLE load_errors (
    ordinal        BIGINT           NOT NULL PRIMARY KEY,
    file           TEXT COLLATE "C" NOT NULL,
    line           BIGINT,
    column_number  BIGINT,
    object         TEXT COLLATE "C",
    path           TEXT COLLATE "C",
    message        TEXT COLLATE "C" NOT NULL
);

-- The single admin token (hash only).
CREATE TABLE admin_token (
    singleton   BIGINT           NOT NULL PRIMARY KEY CHECK (singleton = 1),
    token_hash  TEXT COLLATE "C" NOT NULL,
    updated_at  TIMESTAMPTZ      NOT NULL
);

-- Node tokens (hash only), each bound to one node.
CREATE TABLE node_tokens (
    id          TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    node        TEXT COLLATE "C" NOT NULL CHECK (node <> ''),
    token_hash  TEXT COLLATE "C" NOT NULL UNIQUE,
    created_at  TIMESTAMPTZ      NOT NULL,
    revoked_at  TIMESTAMPTZ
);

-- Last applied report sequence number per (node, stream): makes traffic
-- accounting exactly-once across retried reports.
CREATE TABLE traffic_streams (
    node        TEXT COLLATE "C" NOT NULL,
    stream      TEXT COLLATE "C" NOT NULL,
    last_seq    BIGINT           NOT NULL,
    PRIMARY KEY (node, stream)
);

-- Traffic counters per (server, email), in bytes.
CREATE TABLE traffic_totals (
    server      TEXT COLLATE "C" NOT NULL,
    email       TEXT COLLATE "C" NOT NULL,
    uplink      BIGINT           NOT NULL CHECK (uplink >= 0),
    downlink    BIGINT           NOT NULL CHECK (downlink >= 0),
    PRIMARY KEY (server, email)
);

-- Task-run log chunks, keyed by the run and the agent's chunk sequence number.
CREATE TABLE run_logs (
    kind        TEXT COLLATE "C" NOT NULL,
    namespace   TEXT COLLATE "C" NOT NULL,
    name        TEXT COLLATE "C" NOT NULL,
    seq         BIGINT           NOT NULL,
    chunk       TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (kind, namespace, name, seq)
);

-- Values the operator generates once and must keep stable (VLESS ids, …).
CREATE TABLE generated_values (
    scope       TEXT COLLATE "C" NOT NULL,
    name        TEXT COLLATE "C" NOT NULL,
    value       TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (scope, name)
);
