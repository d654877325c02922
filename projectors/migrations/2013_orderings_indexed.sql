-- Every ordering a list offers is read through an index (ADR 0059): a
-- page is the next rows of the index after its cursor, not a sort of the
-- organization's rows. Customers by last change; quotes by total and by
-- the date they are valid until (by creation and by number were indexed
-- already: rm_quotes_by_created, rm_quotes_number).
CREATE INDEX rm_customers_by_updated ON rm_customers (organization_id, updated_at, id);
CREATE INDEX rm_quotes_by_total ON rm_quotes (organization_id, total, id);
CREATE INDEX rm_quotes_by_valid_until ON rm_quotes (organization_id, valid_until, id);
