-- The versions are partitioned by projection (docs/adr/0068): a rebuild
-- replaces its projection's versions by swapping in its copy as that
-- projection's partition, instead of writing each differing row while it
-- holds the projection's lock. Each projection that keeps versions has a
-- partition of its own; the default partition holds any other projection's
-- until its first rebuild gives it one.
ALTER TABLE projection_versions RENAME TO projection_versions_unpartitioned;
ALTER INDEX projection_versions_pkey RENAME TO projection_versions_unpartitioned_pkey;

CREATE TABLE projection_versions
(
    LIKE projection_versions_unpartitioned INCLUDING DEFAULTS,
    PRIMARY KEY (projection, aggregate_type, aggregate_id)
) PARTITION BY LIST (projection);

CREATE TABLE projection_versions_customers PARTITION OF projection_versions FOR VALUES IN ('customers');
CREATE TABLE projection_versions_organizations PARTITION OF projection_versions FOR VALUES IN ('organizations');
CREATE TABLE projection_versions_users PARTITION OF projection_versions FOR VALUES IN ('users');
CREATE TABLE projection_versions_rate_cards PARTITION OF projection_versions FOR VALUES IN ('rate_cards');
CREATE TABLE projection_versions_quotes PARTITION OF projection_versions FOR VALUES IN ('quotes');
CREATE TABLE projection_versions_default PARTITION OF projection_versions DEFAULT;

INSERT INTO projection_versions SELECT * FROM projection_versions_unpartitioned;
DROP TABLE projection_versions_unpartitioned;
