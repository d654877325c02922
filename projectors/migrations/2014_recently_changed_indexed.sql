-- Quotes and users listed by their last change, as customers are
-- (2013), each read through an index led by the organization (ADR 0059):
-- a page of the most recently changed is the index's last entries, not a
-- sort of the organization's rows. The dashboard's recent activity, when
-- PostgreSQL answers it, reads the same indexes.
CREATE INDEX rm_quotes_by_updated ON rm_quotes (organization_id, updated_at, id);
CREATE INDEX rm_users_by_updated ON rm_users (organization_id, updated_at, id);
