-- A year of synthetic serving data, generated inside PostgreSQL (no round trip per row).
-- Parameters: %(first_hour)s, %(hours)s (span, the last %(open_hours)s of them left open: speed
-- windows only, as while the batch layer has not run yet), %(antennas)s, %(seed)s.
-- Speed layer: every 5-minute window of the span for every antenna, known user and app; batch
-- layer: each closed hour as the exact sum of its windows, so the drift is zero except where a
-- window is bumped below (a late event the speed layer "missed").
SELECT setseed(%(seed)s);

CREATE TEMP TABLE span AS
SELECT %(first_hour)s::timestamptz AS first_hour,
       %(first_hour)s::timestamptz + (%(hours)s - 1) * interval '1 hour' AS last_hour,
       %(first_hour)s::timestamptz + (%(hours)s - %(open_hours)s) * interval '1 hour' AS first_open_hour;

CREATE TEMP TABLE windows AS
SELECT window_start
FROM span, generate_series(span.first_hour, span.last_hour + interval '55 minutes', interval '5 minutes') AS window_start;

-- About 25,000 bytes per user and window (the simulator's rate), spread over antennas and apps.
INSERT INTO bytes_agg_user (id, date, sum_user_bytes)
SELECT users.id, windows.window_start, (random() * 50000)::bigint
FROM windows CROSS JOIN user_metadata AS users;

INSERT INTO bytes_agg_antenna (antenna_id, date, sum_antenna_bytes)
SELECT format('%%s-0000-0000-0000-000000000000', lpad(antenna::text, 8, '0')), windows.window_start,
       (random() * 1000000 / %(antennas)s)::bigint
FROM windows CROSS JOIN generate_series(1, %(antennas)s) AS antenna;

INSERT INTO bytes_agg_app (app, date, sum_app_bytes)
SELECT app, windows.window_start, (random() * 200000)::bigint
FROM windows CROSS JOIN unnest(ARRAY['SKYPE', 'TELEGRAM', 'FACETIME', 'FACEBOOK', 'WHATSAPP']) AS app;

INSERT INTO bytes_agg_antenna_1h (antenna_id, date, sum_antenna_bytes)
SELECT antenna_id, serving_hour(date), sum(sum_antenna_bytes)
FROM bytes_agg_antenna, span WHERE date < span.first_open_hour GROUP BY 1, 2;

INSERT INTO bytes_agg_app_1h (app, date, sum_app_bytes)
SELECT app, serving_hour(date), sum(sum_app_bytes)
FROM bytes_agg_app, span WHERE date < span.first_open_hour GROUP BY 1, 2;

INSERT INTO bytes_agg_user_1h (email, date, sum_user_bytes)
SELECT users.email, serving_hour(windows.date), sum(windows.sum_user_bytes)
FROM bytes_agg_user AS windows JOIN user_metadata AS users USING (id), span
WHERE windows.date < span.first_open_hour GROUP BY 1, 2;

INSERT INTO users_over_quota_1h (email, date, quota, sum_user_bytes)
SELECT hourly.email, hourly.date, users.quota, hourly.sum_user_bytes
FROM bytes_agg_user_1h AS hourly JOIN user_metadata AS users USING (email)
WHERE hourly.sum_user_bytes > users.quota;

INSERT INTO batch_hour_runs (date, valid_events, valid_bytes, unknown_device_bytes, last_streaming_batch)
SELECT antennas.date, 1200, antennas.total, greatest(antennas.total - users.total, 0), 0
FROM (SELECT date, sum(sum_antenna_bytes) AS total FROM bytes_agg_antenna_1h GROUP BY date) AS antennas
JOIN (SELECT date, sum(sum_user_bytes) AS total FROM bytes_agg_user_1h GROUP BY date) AS users USING (date);

-- One window in a hundred lost 1,000 bytes to lateness in the speed layer: some drift to chart.
UPDATE bytes_agg_app SET sum_app_bytes = greatest(sum_app_bytes - 1000, 0)
WHERE random() < 0.01 AND date < (SELECT first_open_hour FROM span);
