-- A customer's or a quote's id is its aggregate's id, so it is unique
-- across organizations. Declaring the index on `id` unique tells the
-- planner so even before the table has statistics: a lookup of N ids
-- (`id = ANY($1)`, the search indexer and the dashboard) is then estimated
-- at N rows, where a table not yet analysed made it estimate half a
-- percent of the table per id, and so (from about 200 ids) the whole
-- table, and scan it (ADR 0031, 0039). Users keep a plain index: one user
-- can belong to several organizations.
DROP INDEX IF EXISTS rm_customers_id;
CREATE UNIQUE INDEX rm_customers_id ON rm_customers (id);
DROP INDEX IF EXISTS rm_quotes_id;
CREATE UNIQUE INDEX rm_quotes_id ON rm_quotes (id);
