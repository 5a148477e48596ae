-- Data lifecycle (docs/contract.md §11): the speed windows of hours the batch layer serves are
-- rolled up once they are older than their retention, so that a year of speed data is a year of
-- hourly rows instead of 5-minute ones, and a dashboard widened to a year stays fast.
--
-- Rolled up, not deleted: a late event can still arrive for an old hour. The stream then adds
-- a window (and a speed_hour_batches row), the hour is no longer served by the batch layer until
-- its republication commits, and the serving views answer it from the speed windows meanwhile:
-- the rolled-up row plus the late window, which is exactly the hour's speed total. A deleted
-- hour would be answered by the late window alone.

-- The speed-versus-batch drift of each rolled-up hour, recorded when it was rolled up, with the
-- batch run it was measured against. serving_speed_drift reads it instead of summing the hour's
-- windows and batch rows again: a year of hours is one index range of this table.
CREATE TABLE speed_drift_hours (
    date                 timestamptz NOT NULL,
    batch_table          text        NOT NULL,
    last_streaming_batch bigint      NOT NULL,
    batch_bytes          bigint      NOT NULL,
    speed_bytes          bigint      NOT NULL,
    PRIMARY KEY (date, batch_table)
);

-- The drift of one closed hour per batch table, as serving_speed_drift has measured it since V003.
CREATE FUNCTION speed_drift_of_hour(hour timestamptz)
RETURNS TABLE (batch_table text, batch_bytes bigint, speed_bytes bigint)
LANGUAGE sql STABLE AS $$
    VALUES
        ('bytes_agg_antenna_1h',
         (SELECT coalesce(sum(sum_antenna_bytes), 0)::bigint FROM bytes_agg_antenna_1h WHERE date = hour),
         (SELECT coalesce(sum(sum_antenna_bytes), 0)::bigint FROM bytes_agg_antenna
          WHERE date >= hour AND date < hour + interval '1 hour')),
        ('bytes_agg_app_1h',
         (SELECT coalesce(sum(sum_app_bytes), 0)::bigint FROM bytes_agg_app_1h WHERE date = hour),
         (SELECT coalesce(sum(sum_app_bytes), 0)::bigint FROM bytes_agg_app
          WHERE date >= hour AND date < hour + interval '1 hour')),
        ('bytes_agg_user_1h',
         (SELECT coalesce(sum(sum_user_bytes), 0)::bigint FROM bytes_agg_user_1h WHERE date = hour),
         (SELECT coalesce(sum(windows.sum_user_bytes), 0)::bigint
          FROM bytes_agg_user AS windows JOIN user_metadata AS users USING (id)
          WHERE windows.date >= hour AND windows.date < hour + interval '1 hour'))
$$;

-- Roll up one hour if the batch layer serves it: its 5-minute windows become one row per key at
-- the hour's start, its speed_hour_batches rows one row (the newest batch id, the sums), and its
-- drift is recorded. Returns the windows removed, 0 when the hour is not served or already rolled.
--
-- Why each reader sees exactly the same numbers afterwards:
-- * the serving views' speed half sums the windows inside the hour: the sum is unchanged, and
--   speed_window_hours still lists the hour (its rolled-up row is in it);
-- * every reconciliation sums speed_hour_batches over batch_id <= M, with M >= the served run's
--   last_streaming_batch L (an older run is superseded before its gate runs): only rows with
--   batch_id <= L are merged, into a row with batch_id <= L, so each such sum is unchanged, and so
--   are max(batch_id) (batch_hours_to_republish, batch_hour_states) and batch_served_hours;
-- * the hour's publication lock (spark_jobs/postgres.py HOUR_LOCK) is held, so no run publishes
--   or withdraws the hour in between, and the served check below sees the final state;
-- * the stream may add to the hour concurrently (a late event): its upsert of a window this
--   deletes waits for the commit, then inserts the window anew or adds to the rolled-up row, so
--   the windows still sum to the hour's speed total; its speed_hour_batches row has a newer batch
--   id than any merged here.
CREATE FUNCTION roll_up_speed_hour(hour timestamptz) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    served_from bigint;
    newest      bigint;
    removed     bigint := 0;
BEGIN
    -- The lock of spark_jobs/postgres.py HOUR_LOCK, whose key is the hour as a UTC session
    -- prints it; spelled out here so that the key does not depend on this session's time zone.
    PERFORM pg_advisory_xact_lock(hashtextextended(
        'batch_hour ' || to_char(hour AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') || '+00', 0));
    SELECT last_streaming_batch INTO served_from FROM batch_served_hours WHERE date = hour;
    IF served_from IS NULL THEN
        RETURN 0;
    END IF;

    -- Measured before the rollup, which leaves every sum as it is.
    INSERT INTO speed_drift_hours (date, batch_table, last_streaming_batch, batch_bytes, speed_bytes)
    SELECT hour, drift.batch_table, served_from, drift.batch_bytes, drift.speed_bytes
    FROM speed_drift_of_hour(hour) AS drift
    ON CONFLICT (date, batch_table) DO UPDATE SET
        last_streaming_batch = EXCLUDED.last_streaming_batch,
        batch_bytes = EXCLUDED.batch_bytes, speed_bytes = EXCLUDED.speed_bytes;

    -- The windows after the hour's start are added into the one at its start (made if missing).
    WITH gone AS (
        DELETE FROM bytes_agg_antenna
        WHERE date > hour AND date < hour + interval '1 hour'
        RETURNING antenna_id, sum_antenna_bytes
    ), rolled AS (
        INSERT INTO bytes_agg_antenna (antenna_id, date, sum_antenna_bytes)
        SELECT antenna_id, hour, sum(sum_antenna_bytes) FROM gone GROUP BY antenna_id
        ON CONFLICT (antenna_id, date) DO UPDATE SET sum_antenna_bytes = bytes_agg_antenna.sum_antenna_bytes + EXCLUDED.sum_antenna_bytes
    )
    SELECT removed + count(*) INTO removed FROM gone;

    WITH gone AS (
        DELETE FROM bytes_agg_user
        WHERE date > hour AND date < hour + interval '1 hour'
        RETURNING id, sum_user_bytes
    ), rolled AS (
        INSERT INTO bytes_agg_user (id, date, sum_user_bytes)
        SELECT id, hour, sum(sum_user_bytes) FROM gone GROUP BY id
        ON CONFLICT (id, date) DO UPDATE SET sum_user_bytes = bytes_agg_user.sum_user_bytes + EXCLUDED.sum_user_bytes
    )
    SELECT removed + count(*) INTO removed FROM gone;

    WITH gone AS (
        DELETE FROM bytes_agg_app
        WHERE date > hour AND date < hour + interval '1 hour'
        RETURNING app, sum_app_bytes
    ), rolled AS (
        INSERT INTO bytes_agg_app (app, date, sum_app_bytes)
        SELECT app, hour, sum(sum_app_bytes) FROM gone GROUP BY app
        ON CONFLICT (app, date) DO UPDATE SET sum_app_bytes = bytes_agg_app.sum_app_bytes + EXCLUDED.sum_app_bytes
    )
    SELECT removed + count(*) INTO removed FROM gone;

    -- The older batches' counts are added into the newest batch's row; as the hour is served,
    -- every row of it has batch_id <= served_from.
    SELECT max(batch_id) INTO newest FROM speed_hour_batches
    WHERE date = hour AND batch_id <= served_from;
    WITH gone AS (
        DELETE FROM speed_hour_batches
        WHERE date = hour AND batch_id < newest
        RETURNING events, bytes
    )
    UPDATE speed_hour_batches
    SET events = speed_hour_batches.events + (SELECT coalesce(sum(events), 0) FROM gone),
        bytes = speed_hour_batches.bytes + (SELECT coalesce(sum(bytes), 0) FROM gone)
    WHERE date = hour AND batch_id = newest;

    RETURN removed;
END
$$;

COMMENT ON FUNCTION roll_up_speed_hour(timestamptz) IS
    'Roll up the speed windows and speed_hour_batches rows of one hour the batch layer serves (docs/contract.md §11).';

-- The hours the lifecycle rolls up: served by the batch layer, ended before `ended_before`, and
-- holding a window after the hour's start (not rolled up yet).
CREATE FUNCTION speed_hours_to_roll_up(ended_before timestamptz)
RETURNS TABLE (date timestamptz)
LANGUAGE sql STABLE AS $$
    SELECT served.date
    FROM batch_served_hours AS served
    WHERE served.date + interval '1 hour' <= ended_before
      AND EXISTS (SELECT 1 FROM bytes_agg_antenna AS windows
                  WHERE windows.date > served.date AND windows.date < served.date + interval '1 hour'
                  UNION ALL
                  SELECT 1 FROM bytes_agg_user AS windows
                  WHERE windows.date > served.date AND windows.date < served.date + interval '1 hour'
                  UNION ALL
                  SELECT 1 FROM bytes_agg_app AS windows
                  WHERE windows.date > served.date AND windows.date < served.date + interval '1 hour'
                  UNION ALL
                  SELECT 1 FROM speed_hour_batches AS batches
                  WHERE batches.date = served.date
                  HAVING count(*) > 1
                  LIMIT 1)
    ORDER BY served.date
$$;

-- The drift: recorded for rolled-up hours still served from the run they were measured against
-- (their windows and batch rows have not changed since: a window of the hour changes only with
-- a speed_hour_batches row of a newer batch, which unserves it), measured live for the others.
CREATE OR REPLACE VIEW serving_speed_drift AS
SELECT kept.date, kept.batch_table, kept.batch_bytes, kept.speed_bytes,
       kept.batch_bytes - kept.speed_bytes AS drift_bytes
FROM speed_drift_hours AS kept
JOIN batch_served_hours AS served
  ON served.date = kept.date AND served.last_streaming_batch = kept.last_streaming_batch
UNION ALL
SELECT closed.date, per_table.batch_table, per_table.batch_bytes, per_table.speed_bytes,
       per_table.batch_bytes - per_table.speed_bytes
FROM batch_hour_runs AS closed
CROSS JOIN LATERAL speed_drift_of_hour(closed.date) AS per_table
WHERE NOT EXISTS (
    SELECT 1 FROM speed_drift_hours AS kept
    JOIN batch_served_hours AS served
      ON served.date = kept.date AND served.last_streaming_batch = kept.last_streaming_batch
    WHERE kept.date = closed.date
);
