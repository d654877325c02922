-- Quote numbers: one counter per organization and year, incremented in the
-- same transaction that appends `quote.created` (docs/adr/0011). A rolled
-- back creation rolls the increment back, so numbers have no gaps; the row
-- lock serializes concurrent creations of one organization and year.
CREATE TABLE quote_number_counters
(
    organization_id uuid    NOT NULL,
    year            integer NOT NULL,
    last_number     integer NOT NULL,
    PRIMARY KEY (organization_id, year)
);
