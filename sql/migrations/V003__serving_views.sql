-- The serving layer: what analysts and the dashboards read. Each hourly question is answered by
-- the batch layer for the hours it has closed (a row in batch_hour_runs, written in the same
-- transaction as that hour's *_1h rows, so a reader sees a closed hour whole or not at all) and by
-- the sum of the speed layer's 5-minute windows for every other hour. `layer` says which answered.
--
-- Hours are UTC hour starts, computed with date_bin from the Unix epoch rather than date_trunc,
-- whose result on timestamptz depends on the session's TimeZone.
--
-- The open hours are enumerated (from the first to the last window of the speed table, minus the
-- closed ones) and each is read with a range scan of the speed table's date index: with a year of
-- closed hours, the speed half of a view costs the few open hours, not a year of windows. A filter
-- on `date` reaches both halves, so a dashboard's time range bounds the work too.

CREATE FUNCTION serving_hour(window_start timestamptz) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN date_bin(interval '1 hour', window_start, timestamptz '1970-01-01 00:00:00+00');

COMMENT ON FUNCTION serving_hour(timestamptz) IS 'The UTC hour a window start belongs to.';

CREATE VIEW serving_antenna_hourly AS
SELECT hourly.antenna_id, hourly.date, hourly.sum_antenna_bytes, 'batch'::text AS layer
FROM bytes_agg_antenna_1h AS hourly
JOIN batch_hour_runs AS closed USING (date)
UNION ALL
SELECT windows.antenna_id, open_hour.date, sum(windows.sum_antenna_bytes)::bigint, 'speed'::text
FROM (SELECT min(date) AS first_window, max(date) AS last_window FROM bytes_agg_antenna) AS span
CROSS JOIN LATERAL generate_series(serving_hour(span.first_window), span.last_window, interval '1 hour') AS open_hour(date)
JOIN bytes_agg_antenna AS windows
  ON windows.date >= open_hour.date AND windows.date < open_hour.date + interval '1 hour'
WHERE NOT EXISTS (SELECT 1 FROM batch_hour_runs AS closed WHERE closed.date = open_hour.date)
GROUP BY windows.antenna_id, open_hour.date;

COMMENT ON VIEW serving_antenna_hourly IS
    'Bytes per antenna and UTC hour: bytes_agg_antenna_1h for closed hours, else the sum of the 5-minute windows.';

CREATE VIEW serving_app_hourly AS
SELECT hourly.app, hourly.date, hourly.sum_app_bytes, 'batch'::text AS layer
FROM bytes_agg_app_1h AS hourly
JOIN batch_hour_runs AS closed USING (date)
UNION ALL
SELECT windows.app, open_hour.date, sum(windows.sum_app_bytes)::bigint, 'speed'::text
FROM (SELECT min(date) AS first_window, max(date) AS last_window FROM bytes_agg_app) AS span
CROSS JOIN LATERAL generate_series(serving_hour(span.first_window), span.last_window, interval '1 hour') AS open_hour(date)
JOIN bytes_agg_app AS windows
  ON windows.date >= open_hour.date AND windows.date < open_hour.date + interval '1 hour'
WHERE NOT EXISTS (SELECT 1 FROM batch_hour_runs AS closed WHERE closed.date = open_hour.date)
GROUP BY windows.app, open_hour.date;

COMMENT ON VIEW serving_app_hourly IS
    'Bytes per app and UTC hour: bytes_agg_app_1h for closed hours, else the sum of the 5-minute windows.';

-- Users by email, as the batch layer keys them: the speed layer keys its windows by device id
-- (only devices of user_metadata are stored), so its half is joined to user_metadata.
CREATE VIEW serving_user_hourly AS
SELECT hourly.email, hourly.date, hourly.sum_user_bytes, 'batch'::text AS layer
FROM bytes_agg_user_1h AS hourly
JOIN batch_hour_runs AS closed USING (date)
UNION ALL
SELECT users.email, open_hour.date, sum(windows.sum_user_bytes)::bigint, 'speed'::text
FROM (SELECT min(date) AS first_window, max(date) AS last_window FROM bytes_agg_user) AS span
CROSS JOIN LATERAL generate_series(serving_hour(span.first_window), span.last_window, interval '1 hour') AS open_hour(date)
JOIN bytes_agg_user AS windows
  ON windows.date >= open_hour.date AND windows.date < open_hour.date + interval '1 hour'
JOIN user_metadata AS users ON users.id = windows.id
WHERE NOT EXISTS (SELECT 1 FROM batch_hour_runs AS closed WHERE closed.date = open_hour.date)
GROUP BY users.email, open_hour.date;

COMMENT ON VIEW serving_user_hourly IS
    'Bytes per user (email) and UTC hour: bytes_agg_user_1h for closed hours, else the sum of the 5-minute windows.';

-- Closed hours: exactly users_over_quota_1h (with the quota the batch run used). Open hours, the
-- current one included: live, users whose windows so far add up to strictly more than their quota.
CREATE VIEW serving_users_over_quota AS
SELECT over.email, over.date, over.quota, over.sum_user_bytes, 'batch'::text AS layer
FROM users_over_quota_1h AS over
JOIN batch_hour_runs AS closed USING (date)
UNION ALL
SELECT live.email, live.date, users.quota, live.sum_user_bytes, 'speed'::text
FROM serving_user_hourly AS live
JOIN user_metadata AS users USING (email)
WHERE live.layer = 'speed' AND live.sum_user_bytes > users.quota;

COMMENT ON VIEW serving_users_over_quota IS
    'Users over their hourly quota: users_over_quota_1h for closed hours, live from the speed layer for open ones.';

-- Per closed hour and batch table: batch bytes minus the bytes of the speed layer's windows inside
-- the hour (users of user_metadata only, as sql/quality/speed_drift.sql counts them). Zero once
-- the speed layer has caught up; what it is not, it missed (late events).
CREATE VIEW serving_speed_drift AS
SELECT closed.date, per_table.batch_table, per_table.batch_bytes, per_table.speed_bytes,
       per_table.batch_bytes - per_table.speed_bytes AS drift_bytes
FROM batch_hour_runs AS closed
CROSS JOIN LATERAL (
    VALUES
        ('bytes_agg_antenna_1h',
         (SELECT coalesce(sum(sum_antenna_bytes), 0)::bigint FROM bytes_agg_antenna_1h WHERE date = closed.date),
         (SELECT coalesce(sum(sum_antenna_bytes), 0)::bigint FROM bytes_agg_antenna
          WHERE date >= closed.date AND date < closed.date + interval '1 hour')),
        ('bytes_agg_app_1h',
         (SELECT coalesce(sum(sum_app_bytes), 0)::bigint FROM bytes_agg_app_1h WHERE date = closed.date),
         (SELECT coalesce(sum(sum_app_bytes), 0)::bigint FROM bytes_agg_app
          WHERE date >= closed.date AND date < closed.date + interval '1 hour')),
        ('bytes_agg_user_1h',
         (SELECT coalesce(sum(sum_user_bytes), 0)::bigint FROM bytes_agg_user_1h WHERE date = closed.date),
         (SELECT coalesce(sum(windows.sum_user_bytes), 0)::bigint
          FROM bytes_agg_user AS windows JOIN user_metadata AS users USING (id)
          WHERE windows.date >= closed.date AND windows.date < closed.date + interval '1 hour'))
) AS per_table (batch_table, batch_bytes, speed_bytes);

COMMENT ON VIEW serving_speed_drift IS
    'Per closed hour and batch table: batch bytes, speed-layer bytes inside the hour, and their difference.';
