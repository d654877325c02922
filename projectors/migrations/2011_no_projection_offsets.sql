-- The projector never read projection_offsets: it resumes from its group's
-- committed offsets, and the versions in projection_versions make a
-- redelivery a no-op (docs/adr/0004, "Update: no offsets in PostgreSQL").
-- Writing them cost every batch a statement and left rows that a
-- recreated topic would have put ahead of the topic.
DROP TABLE IF EXISTS projection_offsets;
