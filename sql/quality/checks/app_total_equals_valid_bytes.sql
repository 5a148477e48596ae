-- The app rows of the hour add up to all valid bytes of the hour (SPEC.md section 8), as the
-- batch run counted them straight from the events (batch_hour_runs; no run means no bytes).
-- Parameter %(hour)s: the start of the UTC hour. A row returned is the violation.
SELECT app_total, valid_bytes, app_total - valid_bytes AS difference
FROM
    (SELECT coalesce(sum(sum_app_bytes), 0)::bigint AS app_total
     FROM bytes_agg_app_1h WHERE date = %(hour)s) AS apps,
    (SELECT coalesce(sum(valid_bytes), 0)::bigint AS valid_bytes
     FROM batch_hour_runs WHERE date = %(hour)s) AS batch_run
WHERE app_total <> valid_bytes;
