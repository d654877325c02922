-- The search projection keeps no versions of its own (docs/adr/0004): its
-- queue is idempotent, and the read models it follows keep theirs in the
-- same transaction.
DELETE FROM projection_versions WHERE projection = 'search';
