-- Quotes per organization and status, kept by triggers on rm_quotes in the
-- same transaction as the rows, as rm_customer_counts is kept beside
-- rm_customers (docs/adr/0041, "Update: quotes"). A quotes list's
-- totalCount filtered by nothing or by status only reads a row or two
-- here instead of counting the organization's quotes.
CREATE TABLE rm_quote_counts
(
    organization_id uuid   NOT NULL,
    status          text   NOT NULL,
    quotes          bigint NOT NULL,
    PRIMARY KEY (organization_id, status)
);

-- One statement's change to the counts, from its transition tables; an
-- update that leaves every status as it was writes nothing. Rows are
-- written in key order.
CREATE FUNCTION rm_quote_counts_change() RETURNS trigger
    LANGUAGE plpgsql AS
$$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        DELETE FROM public.rm_quote_counts;
    ELSIF TG_OP = 'INSERT' THEN
        INSERT INTO public.rm_quote_counts AS c (organization_id, status, quotes)
        SELECT organization_id, status, count(*) FROM new_rows
        GROUP BY organization_id, status ORDER BY organization_id, status
        ON CONFLICT (organization_id, status)
            DO UPDATE SET quotes = c.quotes + EXCLUDED.quotes;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO public.rm_quote_counts AS c (organization_id, status, quotes)
        SELECT organization_id, status, sum(change)
        FROM (SELECT organization_id, status, 1 AS change FROM new_rows
              UNION ALL
              SELECT organization_id, status, -1 FROM old_rows) AS changes
        GROUP BY organization_id, status HAVING sum(change) <> 0
        ORDER BY organization_id, status
        ON CONFLICT (organization_id, status)
            DO UPDATE SET quotes = c.quotes + EXCLUDED.quotes;
    ELSE
        INSERT INTO public.rm_quote_counts AS c (organization_id, status, quotes)
        SELECT organization_id, status, -count(*) FROM old_rows
        GROUP BY organization_id, status ORDER BY organization_id, status
        ON CONFLICT (organization_id, status)
            DO UPDATE SET quotes = c.quotes + EXCLUDED.quotes;
    END IF;
    RETURN NULL;
END
$$;

-- Puts the triggers on public.rm_quotes and counts its rows afresh: here,
-- and in a rebuild's switch once the rebuilt table has replaced the live
-- one (a table made LIKE another has none of its triggers).
CREATE FUNCTION rm_quote_counts_attach() RETURNS void
    LANGUAGE plpgsql AS
$$
DECLARE
    existing name;
BEGIN
    FOR existing IN SELECT tgname FROM pg_trigger
                    WHERE tgrelid = 'public.rm_quotes'::regclass
                      AND tgname::text LIKE 'rm\_quote\_counts\_%'
    LOOP
        EXECUTE format('DROP TRIGGER %I ON public.rm_quotes', existing);
    END LOOP;
    CREATE TRIGGER rm_quote_counts_inserted AFTER INSERT ON public.rm_quotes
        REFERENCING NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION public.rm_quote_counts_change();
    CREATE TRIGGER rm_quote_counts_updated AFTER UPDATE ON public.rm_quotes
        REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION public.rm_quote_counts_change();
    CREATE TRIGGER rm_quote_counts_deleted AFTER DELETE ON public.rm_quotes
        REFERENCING OLD TABLE AS old_rows
        FOR EACH STATEMENT EXECUTE FUNCTION public.rm_quote_counts_change();
    CREATE TRIGGER rm_quote_counts_truncated AFTER TRUNCATE ON public.rm_quotes
        FOR EACH STATEMENT EXECUTE FUNCTION public.rm_quote_counts_change();
    DELETE FROM public.rm_quote_counts;
    INSERT INTO public.rm_quote_counts (organization_id, status, quotes)
    SELECT organization_id, status, count(*) FROM public.rm_quotes
    GROUP BY organization_id, status;
END
$$;

-- Locks the quote counts a batch is about to move, all at once and in key
-- order, before the batch's statements (one per event, each moving its
-- counts as its trigger fires) do: two batches on different partitions
-- then wait for each other instead of deadlocking. A count that does not
-- exist yet is created at 0 so that it can be locked. Nothing is locked
-- where rm_quotes is not the live table (a rebuild's copy, first on its
-- search_path, has no triggers).
CREATE FUNCTION rm_quote_counts_lock(organizations uuid[], statuses text[]) RETURNS void
    LANGUAGE plpgsql AS
$$
BEGIN
    IF to_regclass('rm_quotes') IS DISTINCT FROM 'public.rm_quotes'::regclass THEN
        RETURN;
    END IF;
    INSERT INTO public.rm_quote_counts AS c (organization_id, status, quotes)
    SELECT DISTINCT organization_id, status, 0
    FROM unnest(organizations, statuses) AS u(organization_id, status)
    ORDER BY organization_id, status
    ON CONFLICT (organization_id, status) DO UPDATE SET quotes = c.quotes;
END
$$;

SELECT rm_quote_counts_attach();
