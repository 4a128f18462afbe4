-- The change index: one row, bumped once per write batch under its row lock, so indexes
-- follow commit order across every hub sharing this database.
CREATE TABLE hub_index (
    id    INT PRIMARY KEY CHECK (id = 1),
    value BIGINT NOT NULL
);
INSERT INTO hub_index (id, value) VALUES (1, 0);

-- Key/value settings shared by all hubs: CA, admin token hash, signing keys.
CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- ManagedCluster records; `object` is the JSON document as served (minus live fields).
CREATE TABLE clusters (
    name             TEXT PRIMARY KEY,
    resource_version BIGINT NOT NULL,
    object           TEXT NOT NULL
);

-- ManifestWorks; `object` is the JSON text exactly as stored, so key order survives.
CREATE TABLE works (
    cluster          TEXT NOT NULL,
    name             TEXT NOT NULL,
    resource_version BIGINT NOT NULL,
    object           TEXT NOT NULL,
    PRIMARY KEY (cluster, name)
);

-- The change log behind blocking queries and the wake-up of other hubs; pruned by age.
CREATE TABLE changes (
    idx         BIGINT PRIMARY KEY,
    kind        SMALLINT NOT NULL,
    cluster     TEXT NOT NULL,
    name        TEXT NOT NULL,
    labels      TEXT NOT NULL,
    prev_labels TEXT,
    status_only BOOLEAN NOT NULL
);
