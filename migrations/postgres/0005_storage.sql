-- Storage per work (issue 20). Every agent renews its lease each interval and the hub
-- writes the renewals as one upsert a flush period: with full pages each renewal's new
-- row version went to another page (and a new index entry), and the table grew until
-- autovacuum came round. Half-empty pages keep each new version beside the old one
-- (a HOT update: no index entry), and the page is pruned in place. Applies to pages
-- written from now on; existing pages fill up as they are rewritten.
ALTER TABLE leases SET (fillfactor = 50);
