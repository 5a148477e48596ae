-- Per batch table, the hour's bytes are the bytes the speed layer counted in the hour, in the
-- micro-batches the run read (speed_hour_batches): the drift is 0 (docs/contract.md §8). The user
-- table holds the known devices' bytes, so it adds the run's unknown-device bytes.
-- Parameter %(hour)s: the start of the UTC hour. Each row returned is a violation.
WITH run AS (
    SELECT date, unknown_device_bytes, last_streaming_batch FROM batch_hour_runs WHERE date = %(hour)s
), speed AS (
    SELECT coalesce(sum(batches.bytes), 0)::bigint AS bytes
    FROM run JOIN speed_hour_batches AS batches
      ON batches.date = run.date AND batches.batch_id <= run.last_streaming_batch
), tables (batch_table, batch_bytes) AS (
    SELECT 'bytes_agg_antenna_1h', coalesce(sum(sum_antenna_bytes), 0)::bigint FROM bytes_agg_antenna_1h WHERE date = %(hour)s
    UNION ALL
    SELECT 'bytes_agg_app_1h', coalesce(sum(sum_app_bytes), 0)::bigint FROM bytes_agg_app_1h WHERE date = %(hour)s
    UNION ALL
    SELECT 'bytes_agg_user_1h + unknown devices',
           coalesce(sum(sum_user_bytes), 0)::bigint + (SELECT unknown_device_bytes FROM run)
    FROM bytes_agg_user_1h WHERE date = %(hour)s
)
SELECT tables.batch_table, tables.batch_bytes, speed.bytes AS speed_bytes, tables.batch_bytes - speed.bytes AS drift_bytes
FROM tables CROSS JOIN speed CROSS JOIN run
WHERE tables.batch_bytes <> speed.bytes
ORDER BY tables.batch_table;
