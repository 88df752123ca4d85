-- Veil state store, PostgreSQL flavour: agents and tasks. Keep in step with
-- ../sqlite/0002_tasks.sql: same tables, columns and constraints; only the
-- types differ. Text columns use the "C" collation (bytewise ORDER BY).

-- What agents reported about each task run and where it was placed, keyed by
-- the TaskRun's uid (a TaskRun recreated under the same name is another run).
-- `log_tail` is a JSON array of the last lines, kept as text.
CREATE TABLE run_states (
    uid          TEXT COLLATE "C" NOT NULL PRIMARY KEY CHECK (uid <> ''),
    kind         TEXT COLLATE "C" NOT NULL CHECK (kind <> ''),
    namespace    TEXT COLLATE "C" NOT NULL,
    name         TEXT COLLATE "C" NOT NULL CHECK (name <> ''),
    node         TEXT COLLATE "C",
    phase        TEXT COLLATE "C" NOT NULL CHECK (phase <> ''),
    placed_at    TIMESTAMPTZ,
    started_at   TIMESTAMPTZ,
    finished_at  TIMESTAMPTZ,
    exit_code    INTEGER,
    reason       TEXT COLLATE "C",
    message      TEXT COLLATE "C",
    log_tail     TEXT COLLATE "C" NOT NULL,
    updated_at   TIMESTAMPTZ      NOT NULL
);

-- Registered agents, so VeilNodes survive operator restarts. The registration
-- is kept as the exact JSON text written; `last_report_seq` is the highest
-- report sequence number applied, making reports exactly-once.
CREATE TABLE nodes (
    node             TEXT COLLATE "C" NOT NULL PRIMARY KEY CHECK (node <> ''),
    registration     TEXT COLLATE "C" NOT NULL,
    registered_at    TIMESTAMPTZ      NOT NULL,
    last_seen        TIMESTAMPTZ      NOT NULL,
    last_report_seq  BIGINT           NOT NULL
);

-- Objects the operator generates in dir mode (TaskRuns created by Schedules),
-- as their full JSON text. The primary key is the lock: a name is taken once.
-- The owner is all three columns or none.
CREATE TABLE generated_objects (
    kind             TEXT COLLATE "C" NOT NULL CHECK (kind <> ''),
    namespace        TEXT COLLATE "C" NOT NULL,
    name             TEXT COLLATE "C" NOT NULL CHECK (name <> ''),
    owner_kind       TEXT COLLATE "C" CHECK (owner_kind <> ''),
    owner_namespace  TEXT COLLATE "C",
    owner_name       TEXT COLLATE "C" CHECK (owner_name <> ''),
    document         TEXT COLLATE "C" NOT NULL,
    created_at       TIMESTAMPTZ      NOT NULL,
    PRIMARY KEY (kind, namespace, name),
    CHECK ((owner_kind IS NULL) = (owner_namespace IS NULL)
       AND (owner_kind IS NULL) = (owner_name IS NULL))
);

-- The last schedule time of each Schedule; it never moves backwards.
CREATE TABLE schedule_states (
    kind                TEXT COLLATE "C" NOT NULL CHECK (kind <> ''),
    namespace           TEXT COLLATE "C" NOT NULL,
    name                TEXT COLLATE "C" NOT NULL CHECK (name <> ''),
    last_schedule_time  TIMESTAMPTZ      NOT NULL,
    PRIMARY KEY (kind, namespace, name)
);
