-- What an hour needs to be published only when complete and correct (docs/contract.md §7): the
-- Kafka offsets the speed layer has committed, its own count of each event hour per micro-batch,
-- what each batch run read, the hours whose quality gate failed, and the hours to publish again.

-- Per Kafka partition, the end offset of the last micro-batch the speed layer applied, written in
-- the same transaction as its window increments: an hour is complete once every partition has
-- reached the offset Kafka held when the hour's lateness allowance ended.
CREATE TABLE speed_partition_offsets (
    topic       text        NOT NULL,
    partition   integer     NOT NULL CHECK (partition >= 0),
    next_offset bigint      NOT NULL CHECK (next_offset >= 0),
    batch_id    bigint      NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition)
);

-- The speed layer's count of each event hour, one row per micro-batch that had events in it. Per
-- batch, so that a batch run which read the micro-batches up to N is reconciled against exactly
-- what the stream counted in those batches, however far the stream has gone on since.
CREATE TABLE speed_hour_batches (
    date     timestamptz NOT NULL,
    batch_id bigint      NOT NULL,
    events   bigint      NOT NULL CHECK (events >= 0),
    bytes    bigint      NOT NULL CHECK (bytes >= 0),
    PRIMARY KEY (date, batch_id)
);

-- Counts from before this migration carry batch -1: older than any run that reads them.
INSERT INTO speed_hour_batches (date, batch_id, events, bytes)
SELECT date, -1, events, bytes FROM speed_hour_totals;
DROP TABLE speed_hour_totals;

CREATE VIEW speed_hour_totals AS
SELECT date, sum(events)::bigint AS events, sum(bytes)::bigint AS bytes, max(batch_id) AS last_batch_id
FROM speed_hour_batches
GROUP BY date;

COMMENT ON VIEW speed_hour_totals IS
    'Events and bytes of each UTC event hour as the speed layer counted them, and the last micro-batch that added to it.';

-- What the published run of an hour read, counted apart from its aggregates, for the gate's
-- reconciliations: raw rows and distinct (partition, offset) pairs, and how far behind the stream
-- was (0 unless the run was forced with --allow-incomplete).
ALTER TABLE batch_hour_runs
    ADD COLUMN raw_rows         bigint  NOT NULL DEFAULT 0 CHECK (raw_rows >= 0),
    ADD COLUMN distinct_offsets bigint  NOT NULL DEFAULT 0 CHECK (distinct_offsets >= 0),
    ADD COLUMN records_behind   bigint  NOT NULL DEFAULT 0 CHECK (records_behind >= 0),
    ADD COLUMN forced           boolean NOT NULL DEFAULT false;
UPDATE batch_hour_runs SET raw_rows = valid_events, distinct_offsets = valid_events;

-- Negative sums are refused when written rather than found by a check afterwards.
ALTER TABLE bytes_agg_antenna_1h ADD CONSTRAINT sum_antenna_bytes_not_negative CHECK (sum_antenna_bytes >= 0);
ALTER TABLE bytes_agg_user_1h ADD CONSTRAINT sum_user_bytes_not_negative CHECK (sum_user_bytes >= 0);
ALTER TABLE bytes_agg_app_1h ADD CONSTRAINT sum_app_bytes_not_negative CHECK (sum_app_bytes >= 0);
ALTER TABLE users_over_quota_1h ADD CONSTRAINT over_quota_sums_not_negative CHECK (sum_user_bytes >= 0 AND quota >= 0);

-- The hours whose last run failed its quality gate: not served from the batch layer (the run's
-- rows were never committed, and an earlier publication of the hour is withdrawn).
CREATE TABLE batch_hour_failures (
    date                 timestamptz PRIMARY KEY,
    failed_checks        text        NOT NULL,
    details              text        NOT NULL,
    last_streaming_batch bigint      NOT NULL,
    failed_at            timestamptz NOT NULL DEFAULT now()
);

-- Hours whose input changed after their last run: the stream wrote events for them (late data)
-- in a micro-batch that run did not read. The republication DAG runs exactly these.
CREATE VIEW batch_hours_to_republish AS
SELECT hours.date, hours.last_batch_id, runs.last_streaming_batch AS published_from_batch,
       failures.last_streaming_batch AS failed_at_batch
FROM speed_hour_totals AS hours
LEFT JOIN batch_hour_runs AS runs USING (date)
LEFT JOIN batch_hour_failures AS failures USING (date)
WHERE hours.last_batch_id > coalesce(runs.last_streaming_batch, failures.last_streaming_batch);

COMMENT ON VIEW batch_hours_to_republish IS
    'Published (or failed) hours with events from micro-batches their last batch run did not read.';

-- The hours the batch layer answers: published, and not older than their input (docs/contract.md §7).
-- A published hour that received late data (a speed micro-batch newer than the one its run read)
-- is answered by the speed layer, whose windows hold the late events, until its republication
-- commits. Each hour is one probe of speed_hour_batches' primary key.
CREATE VIEW batch_served_hours AS
SELECT runs.date, runs.last_streaming_batch
FROM batch_hour_runs AS runs
WHERE NOT EXISTS (
    SELECT 1 FROM speed_hour_batches AS batches
    WHERE batches.date = runs.date AND batches.batch_id > runs.last_streaming_batch
);

COMMENT ON VIEW batch_served_hours IS
    'Hours the serving views answer from the batch layer: published from input at least as new as the speed layer''s.';

CREATE OR REPLACE VIEW serving_antenna_hourly AS
SELECT hourly.antenna_id, hourly.date, hourly.sum_antenna_bytes, 'batch'::text AS layer
FROM bytes_agg_antenna_1h AS hourly
JOIN batch_served_hours AS served USING (date)
UNION ALL
SELECT windows.antenna_id, open_hour.date, sum(windows.sum_antenna_bytes)::bigint, 'speed'::text
FROM speed_window_hours AS open_hour
JOIN bytes_agg_antenna AS windows
  ON windows.date >= open_hour.date AND windows.date < open_hour.date + interval '1 hour'
WHERE NOT EXISTS (SELECT 1 FROM batch_served_hours AS served WHERE served.date = open_hour.date)
GROUP BY windows.antenna_id, open_hour.date;

CREATE OR REPLACE VIEW serving_app_hourly AS
SELECT hourly.app, hourly.date, hourly.sum_app_bytes, 'batch'::text AS layer
FROM bytes_agg_app_1h AS hourly
JOIN batch_served_hours AS served USING (date)
UNION ALL
SELECT windows.app, open_hour.date, sum(windows.sum_app_bytes)::bigint, 'speed'::text
FROM speed_window_hours AS open_hour
JOIN bytes_agg_app AS windows
  ON windows.date >= open_hour.date AND windows.date < open_hour.date + interval '1 hour'
WHERE NOT EXISTS (SELECT 1 FROM batch_served_hours AS served WHERE served.date = open_hour.date)
GROUP BY windows.app, open_hour.date;

CREATE OR REPLACE VIEW serving_user_hourly AS
SELECT hourly.email, hourly.date, hourly.sum_user_bytes, 'batch'::text AS layer
FROM bytes_agg_user_1h AS hourly
JOIN batch_served_hours AS served USING (date)
UNION ALL
SELECT users.email, open_hour.date, sum(windows.sum_user_bytes)::bigint, 'speed'::text
FROM speed_window_hours AS open_hour
JOIN bytes_agg_user AS windows
  ON windows.date >= open_hour.date AND windows.date < open_hour.date + interval '1 hour'
JOIN user_metadata AS users ON users.id = windows.id
WHERE NOT EXISTS (SELECT 1 FROM batch_served_hours AS served WHERE served.date = open_hour.date)
GROUP BY users.email, open_hour.date;

CREATE OR REPLACE VIEW serving_users_over_quota AS
SELECT over.email, over.date, over.quota, over.sum_user_bytes, 'batch'::text AS layer
FROM users_over_quota_1h AS over
JOIN batch_served_hours AS served USING (date)
UNION ALL
SELECT live.email, live.date, users.quota, live.sum_user_bytes, 'speed'::text
FROM serving_user_hourly AS live
JOIN user_metadata AS users USING (email)
WHERE live.layer = 'speed' AND live.sum_user_bytes > users.quota;
