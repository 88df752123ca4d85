-- Veil state store, SQLite flavour: VLESS traffic periods. Keep in step with
-- ../postgres/0003_vless.sql: same tables, columns and constraints; only the
-- types differ. STRICT tables; timestamps are RFC 3339 text in UTC with
-- microsecond precision, which sorts (and compares) in time order.

-- The traffic counters of a VlessKey at the start of its current period,
-- keyed by the key's uid: period traffic = traffic_totals - baseline. A key
-- recreated under the same name (new uid), or one whose server or email
-- changed, starts a new baseline.
CREATE TABLE traffic_baselines (
    key_uid       TEXT    NOT NULL PRIMARY KEY CHECK (key_uid <> ''),
    server        TEXT    NOT NULL,
    email         TEXT    NOT NULL,
    period_start  TEXT    NOT NULL,
    uplink        INTEGER NOT NULL CHECK (uplink >= 0),
    downlink      INTEGER NOT NULL CHECK (downlink >= 0)
) STRICT;

-- When traffic of each (server, email) was last reported; never moves backwards.
CREATE TABLE traffic_last_seen (
    server      TEXT    NOT NULL,
    email       TEXT    NOT NULL,
    last_seen   TEXT    NOT NULL,
    PRIMARY KEY (server, email)
) STRICT;
