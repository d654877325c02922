-- Records looked up by id alone: the search indexer (its queue,
-- `search_pending`, holds no organization) and the dashboard (the records a
-- batch touched) read rows with `id = ANY($1)`. The primary keys lead with
-- the organization, so without these every lookup scanned the whole table:
-- each projector batch, and each chunk of a search or dashboard rebuild,
-- cost time in proportion to the table's size.
CREATE INDEX IF NOT EXISTS rm_customers_id ON rm_customers (id);
CREATE INDEX IF NOT EXISTS rm_quotes_id ON rm_quotes (id);
CREATE INDEX IF NOT EXISTS rm_users_id ON rm_users (id);
