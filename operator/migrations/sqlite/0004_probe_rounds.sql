-- Veil state store, SQLite flavour: Strategy probe rounds. Keep in step with
-- ../postgres/0004_probe_rounds.sql: same tables, columns and constraints;
-- only the types differ. STRICT tables; timestamps are RFC 3339 text in UTC
-- with microsecond precision, which sorts (and compares) in time order.

-- The samples of a Strategy's probe rounds on a node, as its agent reported
-- them (`samples` is the JSON text of the round's array of samples). The
-- store keeps a bounded history: the newest rounds per (strategy, node), none
-- older than a retention age.
CREATE TABLE probe_rounds (
    namespace    TEXT    NOT NULL,
    strategy     TEXT    NOT NULL CHECK (strategy <> ''),
    node         TEXT    NOT NULL CHECK (node <> ''),
    finished_at  TEXT    NOT NULL,
    score        REAL,
    samples      TEXT    NOT NULL,
    PRIMARY KEY (namespace, strategy, node, finished_at)
) STRICT;

CREATE INDEX probe_rounds_by_age ON probe_rounds (finished_at);
