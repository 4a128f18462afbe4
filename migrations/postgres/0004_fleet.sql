-- Namespaced fleet objects (Placement, its decisions, ManifestWorkReplicaSet), one table
-- for every kind. `kind` is the hub's ObjectKind; `object` is the JSON text the hub wrote,
-- never parsed by the database; `resource_version` is the change index of the last write.
CREATE TABLE fleet_objects (
    kind             SMALLINT NOT NULL,
    namespace        TEXT NOT NULL,
    name             TEXT NOT NULL,
    resource_version BIGINT NOT NULL,
    object           TEXT NOT NULL,
    PRIMARY KEY (kind, namespace, name)
);
