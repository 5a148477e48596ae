-- The raw rows of the hour are the events the speed layer itself counted in the hour, in the
-- micro-batches the run read (speed_hour_batches, written by the stream with its increments, not
-- from the raw files): a lost or deleted micro-batch makes the raw rows fewer, a duplicate more.
-- Parameter %(hour)s: the start of the UTC hour. A row returned is the violation.
SELECT run.raw_rows, speed.events AS speed_events, run.raw_rows - speed.events AS difference,
       run.last_streaming_batch
FROM batch_hour_runs AS run
CROSS JOIN LATERAL (
    SELECT coalesce(sum(events), 0)::bigint AS events
    FROM speed_hour_batches
    WHERE date = run.date AND batch_id <= run.last_streaming_batch
) AS speed
WHERE run.date = %(hour)s AND run.raw_rows <> speed.events;
