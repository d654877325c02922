-- A customer's quotes: the search projection re-indexes them when the
-- customer changes, read-your-writes searches wait for them, and the quotes
-- list filters by customer.
CREATE INDEX rm_quotes_customer ON rm_quotes (customer_id);
