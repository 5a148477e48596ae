-- The speed layer's own count of each event hour, and the serving views' list of hours with windows.

-- Events and bytes of each UTC event hour as the speed layer counted them, added in the same
-- transaction as its window increments (so exactly once per micro-batch). The batch layer is
-- reconciled against it: it is counted from the stream, not from the raw files or the *_1h rows.
CREATE TABLE speed_hour_totals (
    date       timestamptz PRIMARY KEY,
    events     bigint      NOT NULL CHECK (events >= 0),
    bytes      bigint      NOT NULL CHECK (bytes >= 0),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- The rows PostgreSQL refused in a micro-batch (spark_jobs/streaming.py quarantines the records
-- behind them), recorded with the batch: a replay of the batch after a crash takes the same records
-- out again before it rewrites its raw files, so none of them is stored as valid.
CREATE TABLE speed_refused_rows (
    query_id   text   NOT NULL,
    batch_id   bigint NOT NULL,
    table_name text   NOT NULL,  -- '' for the batch's row of speed_hour_totals
    key        text   NOT NULL,
    start      bigint NOT NULL,  -- window (or hour) start, epoch seconds
    reason     text   NOT NULL,
    PRIMARY KEY (query_id, batch_id, table_name, key, start)
);

-- Every UTC hour that holds a speed window, kept by statement triggers on the three speed tables.
-- The serving views read their open hours from here instead of enumerating every hour between
-- the first and the last window: one event in year 1 and one in year 9999 must not make a view
-- walk eighty million empty hours.
CREATE TABLE speed_window_hours (
    date timestamptz PRIMARY KEY
);

CREATE FUNCTION note_speed_window_hours() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- Only inserted rows can start an hour: an updated window's hour is already listed.
    INSERT INTO speed_window_hours (date)
    SELECT DISTINCT serving_hour(date) FROM new_windows
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END
$$;

CREATE TRIGGER bytes_agg_antenna_window_hours AFTER INSERT ON bytes_agg_antenna
    REFERENCING NEW TABLE AS new_windows FOR EACH STATEMENT EXECUTE FUNCTION note_speed_window_hours();
CREATE TRIGGER bytes_agg_user_window_hours AFTER INSERT ON bytes_agg_user
    REFERENCING NEW TABLE AS new_windows FOR EACH STATEMENT EXECUTE FUNCTION note_speed_window_hours();
CREATE TRIGGER bytes_agg_app_window_hours AFTER INSERT ON bytes_agg_app
    REFERENCING NEW TABLE AS new_windows FOR EACH STATEMENT EXECUTE FUNCTION note_speed_window_hours();

-- After the triggers, so that no window a running job inserts meanwhile is missed.
INSERT INTO speed_window_hours (date)
SELECT serving_hour(date) FROM bytes_agg_antenna
UNION SELECT serving_hour(date) FROM bytes_agg_user
UNION SELECT serving_hour(date) FROM bytes_agg_app
ON CONFLICT DO NOTHING;

CREATE OR REPLACE VIEW serving_antenna_hourly AS
SELECT hourly.antenna_id, hourly.date, hourly.sum_antenna_bytes, 'batch'::text AS layer
FROM bytes_agg_antenna_1h AS hourly
JOIN batch_hour_runs AS closed USING (date)
UNION ALL
SELECT windows.antenna_id, open_hour.date, sum(windows.sum_antenna_bytes)::bigint, 'speed'::text
FROM speed_window_hours AS open_hour
JOIN bytes_agg_antenna AS windows
  ON windows.date >= open_hour.date AND windows.date < open_hour.date + interval '1 hour'
WHERE NOT EXISTS (SELECT 1 FROM batch_hour_runs AS closed WHERE closed.date = open_hour.date)
GROUP BY windows.antenna_id, open_hour.date;

CREATE OR REPLACE VIEW serving_app_hourly AS
SELECT hourly.app, hourly.date, hourly.sum_app_bytes, 'batch'::text AS layer
FROM bytes_agg_app_1h AS hourly
JOIN batch_hour_runs AS closed USING (date)
UNION ALL
SELECT windows.app, open_hour.date, sum(windows.sum_app_bytes)::bigint, 'speed'::text
FROM speed_window_hours AS open_hour
JOIN bytes_agg_app AS windows
  ON windows.date >= open_hour.date AND windows.date < open_hour.date + interval '1 hour'
WHERE NOT EXISTS (SELECT 1 FROM batch_hour_runs AS closed WHERE closed.date = open_hour.date)
GROUP BY windows.app, open_hour.date;

CREATE OR REPLACE VIEW serving_user_hourly AS
SELECT hourly.email, hourly.date, hourly.sum_user_bytes, 'batch'::text AS layer
FROM bytes_agg_user_1h AS hourly
JOIN batch_hour_runs AS closed USING (date)
UNION ALL
SELECT users.email, open_hour.date, sum(windows.sum_user_bytes)::bigint, 'speed'::text
FROM speed_window_hours AS open_hour
JOIN bytes_agg_user AS windows
  ON windows.date >= open_hour.date AND windows.date < open_hour.date + interval '1 hour'
JOIN user_metadata AS users ON users.id = windows.id
WHERE NOT EXISTS (SELECT 1 FROM batch_hour_runs AS closed WHERE closed.date = open_hour.date)
GROUP BY users.email, open_hour.date;
