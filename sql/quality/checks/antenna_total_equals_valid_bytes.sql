-- The antenna rows of the hour add up to all valid bytes of the hour (SPEC.md section 8), as the
-- batch run counted them straight from the events (batch_hour_runs; no run means no bytes).
-- Parameter %(hour)s: the start of the UTC hour. A row returned is the violation.
SELECT antenna_total, valid_bytes, antenna_total - valid_bytes AS difference
FROM
    (SELECT coalesce(sum(sum_antenna_bytes), 0)::bigint AS antenna_total
     FROM bytes_agg_antenna_1h WHERE date = %(hour)s) AS antennas,
    (SELECT coalesce(sum(valid_bytes), 0)::bigint AS valid_bytes
     FROM batch_hour_runs WHERE date = %(hour)s) AS batch_run
WHERE antenna_total <> valid_bytes;
