-- Locks the customer counts a statement on rm_customers is about to
-- change, all at once and in key order (docs/adr/0041, "Update").
--
-- One INSERT ... ON CONFLICT DO UPDATE fires the update trigger and then
-- the insert trigger, and each writes its counts in key order, but not
-- in one order across the two: a batch that changes statuses in one
-- organization and creates customers in another can hold the first
-- organization's counts while it waits for the second's, as another
-- batch does the reverse. A projector that calls this before its write
-- takes every count it will move first, in one order, so two batches on
-- different partitions wait for each other instead of deadlocking.
--
-- A count that does not exist yet is created at 0 so that it can be
-- locked; the triggers then move it. Nothing is locked where the name
-- rm_customers is not the live table: a rebuild's copy, found first on
-- its search_path, has no triggers and moves no counts.
CREATE FUNCTION rm_customer_counts_lock(organizations uuid[], statuses text[]) RETURNS void
    LANGUAGE plpgsql AS
$$
BEGIN
    IF to_regclass('rm_customers') IS DISTINCT FROM 'public.rm_customers'::regclass THEN
        RETURN;
    END IF;
    INSERT INTO public.rm_customer_counts AS c (organization_id, status, customers)
    SELECT DISTINCT organization_id, status, 0
    FROM unnest(organizations, statuses) AS u(organization_id, status)
    ORDER BY organization_id, status
    ON CONFLICT (organization_id, status) DO UPDATE SET customers = c.customers;
END
$$;
