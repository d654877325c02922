-- Customers and quotes are keyed by their ids alone (ADR 0058). A
-- customer's or a quote's id is its aggregate's id, unique across
-- organizations (2007_unique_ids.sql), so the key on (organization_id, id)
-- only repeated the unique index on id, and every row written maintained
-- both. The unique index becomes the primary key (PostgreSQL renames it to
-- the constraint's name); lookups by organization and id are served by it.
-- Users keep theirs: one user can belong to several organizations.
ALTER TABLE rm_customers
    DROP CONSTRAINT rm_customers_pkey,
    ADD CONSTRAINT rm_customers_pkey PRIMARY KEY USING INDEX rm_customers_id;
ALTER TABLE rm_quotes
    DROP CONSTRAINT rm_quotes_pkey,
    ADD CONSTRAINT rm_quotes_pkey PRIMARY KEY USING INDEX rm_quotes_id;
