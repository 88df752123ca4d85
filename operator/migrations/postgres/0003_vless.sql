-- Veil state store, PostgreSQL flavour: VLESS traffic periods. Keep in step
-- with ../sqlite/0003_vless.sql: same tables, columns and constraints; only
-- the types differ. Text columns use the "C" collation (bytewise ORDER BY).

-- The traffic counters of a VlessKey at the start of its current period,
-- keyed by the key's uid: period traffic = traffic_totals - baseline. A key
-- recreated under the same name (new uid), or one whose server or email
-- changed, starts a new baseline.
CREATE TABLE traffic_baselines (
    key_uid       TEXT COLLATE "C" NOT NULL PRIMARY KEY CHECK (key_uid <> ''),
    server        TEXT COLLATE "C" NOT NULL,
    email         TEXT COLLATE "C" NOT NULL,
    period_start  TIMESTAMPTZ      NOT NULL,
    uplink        BIGINT           NOT NULL CHECK (uplink >= 0),
    downlink      BIGINT           NOT NULL CHECK (downlink >= 0)
);

-- When traffic of each (server, email) was last reported; never moves backwards.
CREATE TABLE traffic_last_seen (
    server      TEXT COLLATE "C" NOT NULL,
    email       TEXT COLLATE "C" NOT NULL,
    last_seen   TIMESTAMPTZ      NOT NULL,
    PRIMARY KEY (server, email)
);
