-- No sum (nor quota) of the hour is negative or missing (SPEC.md section 8).
-- Parameter %(hour)s: the start of the UTC hour. Each row returned is a violation.
SELECT table_name, key, value_column, value
FROM (
    SELECT 'bytes_agg_antenna_1h' AS table_name, antenna_id AS key,
           'sum_antenna_bytes' AS value_column, sum_antenna_bytes AS value
    FROM bytes_agg_antenna_1h WHERE date = %(hour)s
    UNION ALL
    SELECT 'bytes_agg_user_1h', email, 'sum_user_bytes', sum_user_bytes FROM bytes_agg_user_1h WHERE date = %(hour)s
    UNION ALL
    SELECT 'bytes_agg_app_1h', app, 'sum_app_bytes', sum_app_bytes FROM bytes_agg_app_1h WHERE date = %(hour)s
    UNION ALL
    SELECT 'users_over_quota_1h', email, 'sum_user_bytes', sum_user_bytes FROM users_over_quota_1h WHERE date = %(hour)s
    UNION ALL
    SELECT 'users_over_quota_1h', email, 'quota', quota FROM users_over_quota_1h WHERE date = %(hour)s
) AS hour_values
WHERE value IS NULL OR value < 0
ORDER BY table_name, key, value_column;
