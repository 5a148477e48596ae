-- The hours the batch layer serves, kept in a table by the writes that change them, instead of
-- found anew by every dashboard query (docs/contract.md §7).
--
-- Up to V010 batch_served_hours was a view: every published run, less those with a speed
-- micro-batch newer than the one they read. A chart widened to a year evaluated that for all
-- 8,760 hours of the year, in every query, through an anti-join per hour, and again in each
-- parallel worker. Whether an hour is served changes only when one of those two tables changes
-- for that hour, so the triggers below recompute exactly the hours a statement touched, by the
-- same definition, and the view now reads the table. Every reader keeps its name and its rows.
--
-- Why the table equals the old view's answer at every commit:
-- * the served state of an hour depends only on that hour's rows of batch_hour_runs and
--   speed_hour_batches, and every statement that writes either (INSERT, UPDATE, DELETE,
--   TRUNCATE) recomputes the hours it wrote, by the old view's query, restricted to them;
-- * two transactions writing the same hour concurrently (the stream adding a late micro-batch
--   while a run publishes it) are serialized by a per-hour lock taken before the recomputation;
--   the second one waits for the first to commit, and as READ COMMITTED gives each statement a
--   new snapshot (every writer of the platform uses it), it recomputes from the first one's rows.
--   Without the lock each could recompute from a snapshot missing the other's row and leave the
--   hour served from a run older than the stream's input.

CREATE TABLE batch_hours_served (
    date                 timestamptz PRIMARY KEY,
    last_streaming_batch bigint      NOT NULL
);

COMMENT ON TABLE batch_hours_served IS
    'The hours the batch layer serves (read through batch_served_hours), kept by triggers on batch_hour_runs and speed_hour_batches (V011).';

-- Recompute the served state of `hours` under their locks. An hour's lock is one of 128 slots
-- (its hour number modulo 128), so that recomputing a year takes 128 locks, not 8,760 (advisory
-- locks share the server's lock table); hours 128 hours apart share a slot, which only makes
-- their writers wait for each other. Taken in slot order, so that two writers of several hours
-- never wait on each other in a cycle.
CREATE FUNCTION refresh_batch_hours_served(hours timestamptz[]) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('batch_served_hour'), slot)
    FROM (SELECT DISTINCT (floor(extract(epoch FROM hour) / 3600)::bigint % 128)::integer AS slot
          FROM unnest(hours) AS hour ORDER BY slot) AS locked;

    DELETE FROM batch_hours_served WHERE date = ANY (hours);
    INSERT INTO batch_hours_served (date, last_streaming_batch)
    SELECT runs.date, runs.last_streaming_batch
    FROM batch_hour_runs AS runs
    WHERE runs.date = ANY (hours)
      AND NOT EXISTS (
          SELECT 1 FROM speed_hour_batches AS batches
          WHERE batches.date = runs.date AND batches.batch_id > runs.last_streaming_batch
      );
END
$$;

-- The hours a statement wrote, from its transition tables (an UPDATE could move a row's hour:
-- both the old and the new one are recomputed).
CREATE FUNCTION note_batch_hours_served() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    hours timestamptz[];
BEGIN
    IF TG_OP = 'INSERT' THEN
        SELECT array_agg(DISTINCT date) INTO hours FROM new_rows;
    ELSIF TG_OP = 'UPDATE' THEN
        SELECT array_agg(date) INTO hours
        FROM (SELECT date FROM new_rows UNION SELECT date FROM old_rows) AS written;
    ELSE
        SELECT array_agg(DISTINCT date) INTO hours FROM old_rows;
    END IF;
    IF hours IS NOT NULL THEN
        PERFORM refresh_batch_hours_served(hours);
    END IF;
    RETURN NULL;
END
$$;

-- TRUNCATE has no transition table: every hour the table held, or still holds, is recomputed.
CREATE FUNCTION note_batch_hours_truncated() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM refresh_batch_hours_served(ARRAY(
        SELECT date FROM batch_hours_served UNION SELECT date FROM batch_hour_runs));
    RETURN NULL;
END
$$;

CREATE TRIGGER batch_hour_runs_inserted_served AFTER INSERT ON batch_hour_runs
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION note_batch_hours_served();
CREATE TRIGGER batch_hour_runs_updated_served AFTER UPDATE ON batch_hour_runs
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION note_batch_hours_served();
CREATE TRIGGER batch_hour_runs_deleted_served AFTER DELETE ON batch_hour_runs
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION note_batch_hours_served();
CREATE TRIGGER batch_hour_runs_truncated_served AFTER TRUNCATE ON batch_hour_runs
    FOR EACH STATEMENT EXECUTE FUNCTION note_batch_hours_truncated();

CREATE TRIGGER speed_hour_batches_inserted_served AFTER INSERT ON speed_hour_batches
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION note_batch_hours_served();
CREATE TRIGGER speed_hour_batches_updated_served AFTER UPDATE ON speed_hour_batches
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION note_batch_hours_served();
CREATE TRIGGER speed_hour_batches_deleted_served AFTER DELETE ON speed_hour_batches
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION note_batch_hours_served();
CREATE TRIGGER speed_hour_batches_truncated_served AFTER TRUNCATE ON speed_hour_batches
    FOR EACH STATEMENT EXECUTE FUNCTION note_batch_hours_truncated();

-- After the triggers, so that no hour a running job writes meanwhile is missed.
SELECT refresh_batch_hours_served(ARRAY(SELECT date FROM batch_hour_runs));

CREATE OR REPLACE VIEW batch_served_hours AS
SELECT date, last_streaming_batch FROM batch_hours_served;

COMMENT ON VIEW batch_served_hours IS
    'Hours the serving views answer from the batch layer: published from input at least as new as the speed layer''s.';
