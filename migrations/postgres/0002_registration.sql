-- Bootstrap and API tokens; the secret is kept only as its SHA-256.
CREATE TABLE tokens (
    id            TEXT PRIMARY KEY,
    secret_sha256 TEXT NOT NULL,
    uses          BIGINT NOT NULL DEFAULT 0,
    object        TEXT NOT NULL
);

-- Join requests; changes go through the change index so joiners and admins can block on them.
CREATE TABLE registrations (
    id               TEXT PRIMARY KEY,
    cluster          TEXT NOT NULL,
    resource_version BIGINT NOT NULL,
    object           TEXT NOT NULL
);
CREATE INDEX registrations_cluster ON registrations (cluster);

-- The accepted agent of each cluster: its public key and a generation that revocation bumps,
-- which invalidates every access token issued before.
CREATE TABLE agents (
    cluster         TEXT PRIMARY KEY,
    public_key      TEXT NOT NULL,
    registration_id TEXT NOT NULL,
    generation      BIGINT NOT NULL,
    revoked         BOOLEAN NOT NULL
);

-- Lease renewals: written on every heartbeat, outside the change index.
CREATE TABLE leases (
    cluster    TEXT PRIMARY KEY,
    renewed_at TEXT NOT NULL
);

-- Who did what, when, from where.
CREATE TABLE audit (
    id      BIGSERIAL PRIMARY KEY,
    at      TEXT NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    target  TEXT NOT NULL,
    source  TEXT NOT NULL,
    details TEXT NOT NULL
);
CREATE INDEX audit_target ON audit (target);
