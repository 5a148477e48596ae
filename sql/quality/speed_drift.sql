-- How far the speed layer's 5-minute windows inside the hour are from the batch totals, per
-- table: they agree once the speed layer has caught up, except for events that arrived after its
-- watermark (docs/contract.md §8), so the drift is reported, not checked. Users are compared by
-- email, for the users of user_metadata only, as the batch layer counts them.
-- Parameter %(hour)s: the start of the UTC hour. One row per batch table.
WITH bounds AS (
    SELECT %(hour)s::timestamptz AS hour_start, %(hour)s::timestamptz + interval '1 hour' AS hour_end
), per_key AS (
    SELECT 'bytes_agg_antenna_1h' AS batch_table, antenna_id AS key,
           coalesce(batch.total, 0) AS batch_bytes, coalesce(speed.total, 0) AS speed_bytes
    FROM (SELECT antenna_id, sum_antenna_bytes AS total
          FROM bytes_agg_antenna_1h, bounds WHERE date = hour_start) AS batch
    FULL JOIN (SELECT antenna_id, sum(sum_antenna_bytes) AS total
               FROM bytes_agg_antenna, bounds WHERE date >= hour_start AND date < hour_end
               GROUP BY antenna_id) AS speed USING (antenna_id)
    UNION ALL
    SELECT 'bytes_agg_app_1h', app, coalesce(batch.total, 0), coalesce(speed.total, 0)
    FROM (SELECT app, sum_app_bytes AS total
          FROM bytes_agg_app_1h, bounds WHERE date = hour_start) AS batch
    FULL JOIN (SELECT app, sum(sum_app_bytes) AS total
               FROM bytes_agg_app, bounds WHERE date >= hour_start AND date < hour_end
               GROUP BY app) AS speed USING (app)
    UNION ALL
    SELECT 'bytes_agg_user_1h', email, coalesce(batch.total, 0), coalesce(speed.total, 0)
    FROM (SELECT email, sum_user_bytes AS total
          FROM bytes_agg_user_1h, bounds WHERE date = hour_start) AS batch
    FULL JOIN (SELECT users.email, sum(windows.sum_user_bytes) AS total
               FROM bytes_agg_user AS windows
               JOIN user_metadata AS users USING (id), bounds
               WHERE windows.date >= hour_start AND windows.date < hour_end
               GROUP BY users.email) AS speed USING (email)
), tables (batch_table, speed_table) AS (
    VALUES ('bytes_agg_antenna_1h', 'bytes_agg_antenna'),
           ('bytes_agg_app_1h', 'bytes_agg_app'),
           ('bytes_agg_user_1h', 'bytes_agg_user')
)
SELECT tables.batch_table,
       tables.speed_table,
       coalesce(sum(per_key.batch_bytes), 0)::bigint AS batch_bytes,
       coalesce(sum(per_key.speed_bytes), 0)::bigint AS speed_bytes,
       coalesce(sum(per_key.batch_bytes - per_key.speed_bytes), 0)::bigint AS drift_bytes,
       count(per_key.key) AS keys,
       count(per_key.key) FILTER (WHERE per_key.batch_bytes <> per_key.speed_bytes) AS keys_differing
FROM tables
LEFT JOIN per_key USING (batch_table)
GROUP BY tables.batch_table, tables.speed_table
ORDER BY tables.batch_table;
