-- Veil state store, PostgreSQL flavour: Strategy probe rounds. Keep in step
-- with ../sqlite/0004_probe_rounds.sql: same tables, columns and
-- constraints; only the types differ. Text columns use the "C" collation
-- (bytewise ORDER BY).

-- The samples of a Strategy's probe rounds on a node, as its agent reported
-- them (`samples` is the JSON text of the round's array of samples). The
-- store keeps a bounded history: the newest rounds per (strategy, node), none
-- older than a retention age.
CREATE TABLE probe_rounds (
    namespace    TEXT COLLATE "C" NOT NULL,
    strategy     TEXT COLLATE "C" NOT NULL CHECK (strategy <> ''),
    node         TEXT COLLATE "C" NOT NULL CHECK (node <> ''),
    finished_at  TIMESTAMPTZ      NOT NULL,
    score        DOUBLE PRECISION,
    samples      TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (namespace, strategy, node, finished_at)
);

CREATE INDEX probe_rounds_by_age ON probe_rounds (finished_at);
