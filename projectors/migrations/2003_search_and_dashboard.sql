-- Records whose search document must be (re)written: filled by the `search`
-- projection in the same transaction as the read models, drained by the
-- indexer once the search engine has the document at that version or later.
CREATE TABLE search_pending
(
    aggregate_type text   NOT NULL,
    aggregate_id   text   NOT NULL,
    version        bigint NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id)
);
