-- The time filter of a chart lands on the served hours, not on every hourly batch row.
--
-- A chart's range arrives as `date >= TO_TIMESTAMP(text, fmt) AND date < TO_TIMESTAMP(...)`
-- (Superset's PostgreSQL spelling). TO_TIMESTAMP is STABLE, not folded at planning, so a filter
-- pushed into a sequential scan parses both bounds again for every row it reads. Up to V008 the
-- batch half of each view output the batch table's own `date` (hourly.date), so a whole-year
-- chart evaluated the filter on every row of that table (43,785 to 175,140 a year; the profile
-- is in the README, "How fast, with a year of data"). The views now output the served hour's `date`
-- (served.date, equal to the batch row's by the join's equality): the planner pushes the filter
-- to batch_served_hours (one row per hour, 8,760 a year) and reads the batch rows unfiltered
-- through the join. Same rows, same columns, the same answers: only where the filter is applied.

CREATE OR REPLACE VIEW serving_antenna_hourly AS
SELECT hourly.antenna_id, served.date, hourly.sum_antenna_bytes, 'batch'::text AS layer
FROM bytes_agg_antenna_1h AS hourly
JOIN batch_served_hours AS served ON served.date = hourly.date
UNION ALL
SELECT windows.antenna_id, open_hour.date, sum(windows.sum_antenna_bytes)::bigint, 'speed'::text
FROM speed_window_hours AS open_hour
JOIN bytes_agg_antenna AS windows
  ON windows.date >= open_hour.date AND windows.date < open_hour.date + interval '1 hour'
WHERE NOT EXISTS (SELECT 1 FROM batch_served_hours AS served WHERE served.date = open_hour.date)
GROUP BY windows.antenna_id, open_hour.date;

CREATE OR REPLACE VIEW serving_app_hourly AS
SELECT hourly.app, served.date, hourly.sum_app_bytes, 'batch'::text AS layer
FROM bytes_agg_app_1h AS hourly
JOIN batch_served_hours AS served ON served.date = hourly.date
UNION ALL
SELECT windows.app, open_hour.date, sum(windows.sum_app_bytes)::bigint, 'speed'::text
FROM speed_window_hours AS open_hour
JOIN bytes_agg_app AS windows
  ON windows.date >= open_hour.date AND windows.date < open_hour.date + interval '1 hour'
WHERE NOT EXISTS (SELECT 1 FROM batch_served_hours AS served WHERE served.date = open_hour.date)
GROUP BY windows.app, open_hour.date;

CREATE OR REPLACE VIEW serving_user_hourly AS
SELECT hourly.email, served.date, hourly.sum_user_bytes, 'batch'::text AS layer
FROM bytes_agg_user_1h AS hourly
JOIN batch_served_hours AS served ON served.date = hourly.date
UNION ALL
SELECT users.email, open_hour.date, sum(windows.sum_user_bytes)::bigint, 'speed'::text
FROM speed_window_hours AS open_hour
JOIN bytes_agg_user AS windows
  ON windows.date >= open_hour.date AND windows.date < open_hour.date + interval '1 hour'
JOIN user_metadata AS users ON users.id = windows.id
WHERE NOT EXISTS (SELECT 1 FROM batch_served_hours AS served WHERE served.date = open_hour.date)
GROUP BY users.email, open_hour.date;

CREATE OR REPLACE VIEW serving_users_over_quota AS
SELECT over.email, served.date, over.quota, over.sum_user_bytes, 'batch'::text AS layer
FROM users_over_quota_1h AS over
JOIN batch_served_hours AS served ON served.date = over.date
UNION ALL
SELECT live.email, live.date, users.quota, live.sum_user_bytes, 'speed'::text
FROM serving_user_hourly AS live
JOIN user_metadata AS users USING (email)
WHERE live.layer = 'speed' AND live.sum_user_bytes > users.quota;

CREATE OR REPLACE VIEW serving_speed_drift AS
SELECT served.date, kept.batch_table, kept.batch_bytes, kept.speed_bytes,
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
