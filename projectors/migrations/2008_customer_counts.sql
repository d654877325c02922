-- Customers per organization and status, kept by triggers on rm_customers
-- in the same transaction as the rows (docs/adr/0041). A list's totalCount
-- filtered by nothing or by status only reads a row or two here instead of
-- counting the organization's whole list.
--
-- Triggers rather than the projection's code: every statement that changes
-- rm_customers moves the counts, whichever process or version runs it (a
-- projector still on the previous release during a rolling upgrade, a test
-- writing rows directly).
CREATE TABLE rm_customer_counts
(
    organization_id uuid   NOT NULL,
    status          text   NOT NULL,
    customers       bigint NOT NULL,
    PRIMARY KEY (organization_id, status)
);

-- One statement's change to the counts, from its transition tables. An
-- update that leaves every status as it was nets to nothing and writes
-- nothing, so the counts' rows are written only by creations and status
-- changes. Rows are written in key order.
CREATE FUNCTION rm_customer_counts_change() RETURNS trigger
    LANGUAGE plpgsql AS
$$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        DELETE FROM public.rm_customer_counts;
    ELSIF TG_OP = 'INSERT' THEN
        INSERT INTO public.rm_customer_counts AS c (organization_id, status, customers)
        SELECT organization_id, status, count(*) FROM new_rows
        GROUP BY organization_id, status ORDER BY organization_id, status
        ON CONFLICT (organization_id, status)
            DO UPDATE SET customers = c.customers + EXCLUDED.customers;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO public.rm_customer_counts AS c (organization_id, status, customers)
        SELECT organization_id, status, sum(change)
        FROM (SELECT organization_id, status, 1 AS change FROM new_rows
              UNION ALL
              SELECT organization_id, status, -1 FROM old_rows) AS changes
        GROUP BY organization_id, status HAVING sum(change) <> 0
        ORDER BY organization_id, status
        ON CONFLICT (organization_id, status)
            DO UPDATE SET customers = c.customers + EXCLUDED.customers;
    ELSE
        INSERT INTO public.rm_customer_counts AS c (organization_id, status, customers)
        SELECT organization_id, status, -count(*) FROM old_rows
        GROUP BY organization_id, status ORDER BY organization_id, status
        ON CONFLICT (organization_id, status)
            DO UPDATE SET customers = c.customers + EXCLUDED.customers;
    END IF;
    RETURN NULL;
END
$$;

-- Puts the triggers on public.rm_customers and counts its rows afresh.
-- Run here, and by a rebuild's switch (in its transaction, under the
-- projection's lock) once the rebuilt table has replaced the live one: a
-- table made LIKE another has none of its triggers.
CREATE FUNCTION rm_customer_counts_attach() RETURNS void
    LANGUAGE plpgsql AS
$$
DECLARE
    existing name;
BEGIN
    FOR existing IN SELECT tgname FROM pg_trigger
                    WHERE tgrelid = 'public.rm_customers'::regclass
                      AND tgname::text LIKE 'rm\_customer\_counts\_%'
    LOOP
        EXECUTE format('DROP TRIGGER %I ON public.rm_customers', existing);
    END LOOP;
    CREATE TRIGGER rm_customer_counts_inserted AFTER INSERT ON public.rm_customers
        REFERENCING NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION public.rm_customer_counts_change();
    CREATE TRIGGER rm_customer_counts_updated AFTER UPDATE ON public.rm_customers
        REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION public.rm_customer_counts_change();
    CREATE TRIGGER rm_customer_counts_deleted AFTER DELETE ON public.rm_customers
        REFERENCING OLD TABLE AS old_rows
        FOR EACH STATEMENT EXECUTE FUNCTION public.rm_customer_counts_change();
    CREATE TRIGGER rm_customer_counts_truncated AFTER TRUNCATE ON public.rm_customers
        FOR EACH STATEMENT EXECUTE FUNCTION public.rm_customer_counts_change();
    DELETE FROM public.rm_customer_counts;
    INSERT INTO public.rm_customer_counts (organization_id, status, customers)
    SELECT organization_id, status, count(*) FROM public.rm_customers
    GROUP BY organization_id, status;
END
$$;

SELECT rm_customer_counts_attach();
