-- The user rows of the hour plus the bytes of unknown devices add up to all valid bytes of the
-- hour (SPEC.md section 8): unknown devices count toward antennas and apps, never toward users.
-- Parameter %(hour)s: the start of the UTC hour. A row returned is the violation.
SELECT user_total, unknown_device_bytes, valid_bytes,
       user_total + unknown_device_bytes - valid_bytes AS difference
FROM
    (SELECT coalesce(sum(sum_user_bytes), 0)::bigint AS user_total
     FROM bytes_agg_user_1h WHERE date = %(hour)s) AS users,
    (SELECT coalesce(sum(valid_bytes), 0)::bigint AS valid_bytes,
            coalesce(sum(unknown_device_bytes), 0)::bigint AS unknown_device_bytes
     FROM batch_hour_runs WHERE date = %(hour)s) AS batch_run
WHERE user_total + unknown_device_bytes <> valid_bytes;
