-- Pipeline health (docs/contract.md §10): what each micro-batch of the speed layer did and how far
-- behind Kafka it was, and the state of every hour, so that "is it keeping up, is anything stuck?"
-- is a query. The streaming job writes the micro-batch rows after each batch and deletes those
-- older than its health retention; the hour states are a view over the publication tables, not a
-- second copy of them.

-- One row per micro-batch the speed layer applied (a replay after a crash rewrites its row).
CREATE TABLE speed_micro_batches (
    query_id                 text             NOT NULL,
    batch_id                 bigint           NOT NULL,
    finished_at              timestamptz      NOT NULL DEFAULT now(),
    events                   bigint           NOT NULL CHECK (events >= 0),
    quarantined              bigint           NOT NULL CHECK (quarantined >= 0),
    -- The newest valid event's time; NULL for a batch without valid events.
    newest_event_time        timestamptz,
    -- Seconds per step of the batch (spark_jobs/streaming.py's StepTimer), 0 for a step not run.
    read_aggregate_seconds   double precision NOT NULL CHECK (read_aggregate_seconds >= 0),
    raw_seconds              double precision NOT NULL CHECK (raw_seconds >= 0),
    quarantine_seconds       double precision NOT NULL CHECK (quarantine_seconds >= 0),
    postgres_seconds         double precision NOT NULL CHECK (postgres_seconds >= 0),
    compaction_seconds       double precision NOT NULL CHECK (compaction_seconds >= 0),
    PRIMARY KEY (query_id, batch_id)
);
CREATE INDEX speed_micro_batches_finished_at ON speed_micro_batches (finished_at);

-- Per micro-batch and Kafka partition: the offset the batch committed (the next one to read) and
-- the partition's latest offset when the batch ended. Lag is latest_offset - committed_offset.
CREATE TABLE speed_micro_batch_partitions (
    query_id         text    NOT NULL,
    batch_id         bigint  NOT NULL,
    topic            text    NOT NULL,
    partition        integer NOT NULL CHECK (partition >= 0),
    committed_offset bigint  NOT NULL CHECK (committed_offset >= 0),
    latest_offset    bigint  NOT NULL CHECK (latest_offset >= 0),
    PRIMARY KEY (query_id, batch_id, topic, partition),
    FOREIGN KEY (query_id, batch_id) REFERENCES speed_micro_batches ON DELETE CASCADE
);

-- Per micro-batch, the records it quarantined by reason (docs/contract.md §4's reasons, or the
-- refusal reason of a row PostgreSQL refused).
CREATE TABLE speed_micro_batch_quarantine (
    query_id text   NOT NULL,
    batch_id bigint NOT NULL,
    reason   text   NOT NULL,
    records  bigint NOT NULL CHECK (records > 0),
    PRIMARY KEY (query_id, batch_id, reason),
    FOREIGN KEY (query_id, batch_id) REFERENCES speed_micro_batches ON DELETE CASCADE
);

-- Kafka lag of each micro-batch, per partition, in records.
CREATE VIEW speed_partition_lag AS
SELECT batches.finished_at, partitions.topic, partitions.partition, partitions.batch_id,
       greatest(partitions.latest_offset - partitions.committed_offset, 0) AS records_behind
FROM speed_micro_batch_partitions AS partitions
JOIN speed_micro_batches AS batches USING (query_id, batch_id);

COMMENT ON VIEW speed_partition_lag IS
    'Records each Kafka partition held beyond what each micro-batch committed, when it ended.';

-- The state of every hour the platform has data or a batch run for:
--   open                      the hour has not ended yet
--   waiting for completeness  ended, not published yet (batch_hourly waits for the stream)
--   published                 the batch layer answers it
--   republication pending     published, then late events came (batch_republish reruns it)
--   failed                    its last run failed the quality gate (failed_checks say which)
CREATE VIEW batch_hour_states AS
WITH hours AS (
    SELECT date FROM speed_hour_totals
    UNION SELECT date FROM batch_hour_runs
    UNION SELECT date FROM batch_hour_failures
)
SELECT hours.date,
       CASE
           WHEN failures.date IS NOT NULL THEN 'failed'
           WHEN runs.date IS NOT NULL AND speed.last_batch_id > runs.last_streaming_batch
               THEN 'republication pending'
           WHEN runs.date IS NOT NULL THEN 'published'
           WHEN now() < hours.date + interval '1 hour' THEN 'open'
           ELSE 'waiting for completeness'
       END AS state,
       failures.failed_checks,
       failures.failed_at,
       runs.computed_at AS published_at,
       runs.last_streaming_batch AS published_from_batch,
       runs.raw_rows AS published_raw_rows,
       runs.forced AS published_forced,
       speed.last_batch_id AS newest_speed_batch,
       speed.events AS speed_events
FROM hours
LEFT JOIN batch_hour_runs AS runs USING (date)
LEFT JOIN batch_hour_failures AS failures USING (date)
LEFT JOIN speed_hour_totals AS speed USING (date);

COMMENT ON VIEW batch_hour_states IS
    'Each hour''s state: open, waiting for completeness, published, republication pending or failed.';

-- How far behind real time each layer answers: now minus the newest event time it serves.
CREATE VIEW layer_freshness AS
SELECT 'speed'::text AS layer, max(newest_event_time) AS newest_event_time,
       now() - max(newest_event_time) AS behind
FROM speed_micro_batches
UNION ALL
SELECT 'batch'::text, max(date) + interval '1 hour', now() - (max(date) + interval '1 hour')
FROM batch_served_hours;

COMMENT ON VIEW layer_freshness IS
    'Per layer, the newest event time it serves and how long ago that is (the batch layer serves whole hours).';
