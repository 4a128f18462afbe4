-- Ids (jti) of the agents' assertions already accepted: each assertion is single-use,
-- on every hub sharing this database, until it expires (Unix seconds, leeway included).
-- Hubs delete the rows past their expiry, so the table holds minutes of assertions.
CREATE TABLE assertion_ids (
    issuer     TEXT NOT NULL,
    jti        TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (issuer, jti)
);
CREATE INDEX assertion_ids_expires ON assertion_ids (expires_at);
