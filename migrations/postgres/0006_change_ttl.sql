-- Each work change says whether the work, as written, has a ttlSecondsAfterFinished
-- (issue 20): the TTL controller read every work a user wrote again to find out, a
-- read per create that was a third of Postgres's CPU per create. NULL where a hub older
-- than this column wrote the change: such a work is read, as before.
ALTER TABLE changes ADD COLUMN has_ttl BOOLEAN;
