-- Veil state store, SQLite flavour: agents and tasks. Keep in step with
-- ../postgres/0002_tasks.sql: same tables, columns and constraints; only the
-- types differ. STRICT tables; timestamps are RFC 3339 text in UTC with
-- microsecond precision, which sorts (and compares) in time order.

-- What agents reported about each task run and where it was placed, keyed by
-- the TaskRun's uid (a TaskRun recreated under the same name is another run).
-- `log_tail` is a JSON array of the last lines, kept as text.
CREATE TABLE run_states (
    uid          TEXT    NOT NULL PRIMARY KEY CHECK (uid <> ''),
    kind         TEXT    NOT NULL CHECK (kind <> ''),
    namespace    TEXT    NOT NULL,
    name         TEXT    NOT NULL CHECK (name <> ''),
    node         TEXT,
    phase        TEXT    NOT NULL CHECK (phase <> ''),
    placed_at    TEXT,
    started_at   TEXT,
    finished_at  TEXT,
    exit_code    INTEGER,
    reason       TEXT,
    message      TEXT,
    log_tail     TEXT    NOT NULL,
    updated_at   TEXT    NOT NULL
) STRICT;

-- Registered agents, so VeilNodes survive operator restarts. The registration
-- is kept as the exact JSON text written; `last_report_seq` is the highest
-- report sequence number applied, making reports exactly-once.
CREATE TABLE nodes (
    node             TEXT    NOT NULL PRIMARY KEY CHECK (node <> ''),
    registration     TEXT    NOT NULL,
    registered_at    TEXT    NOT NULL,
    last_seen        TEXT    NOT NULL,
    last_report_seq  INTEGER NOT NULL
) STRICT;

-- Objects the operator generates in dir mode (TaskRuns created by Schedules),
-- as their full JSON text. The primary key is the lock: a name is taken once.
-- The owner is all three columns or none.
CREATE TABLE generated_objects (
    kind             TEXT    NOT NULL CHECK (kind <> ''),
    namespace        TEXT    NOT NULL,
    name             TEXT    NOT NULL CHECK (name <> ''),
    owner_kind       TEXT    CHECK (owner_kind <> ''),
    owner_namespace  TEXT,
    owner_name       TEXT    CHECK (owner_name <> ''),
    document         TEXT    NOT NULL,
    created_at       TEXT    NOT NULL,
    PRIMARY KEY (kind, namespace, name),
    CHECK ((owner_kind IS NULL) = (owner_namespace IS NULL)
       AND (owner_kind IS NULL) = (owner_name IS NULL))
) STRICT;

-- The last schedule time of each Schedule; it never moves backwards.
CREATE TABLE schedule_states (
    kind                TEXT    NOT NULL CHECK (kind <> ''),
    namespace           TEXT    NOT NULL,
    name                TEXT    NOT NULL CHECK (name <> ''),
    last_schedule_time  TEXT    NOT NULL,
    PRIMARY KEY (kind, namespace, name)
) STRICT;
