-- No key of the hour's rows is null (SPEC.md section 8).
-- Parameter %(hour)s: the start of the UTC hour. Each row returned is a violation.
SELECT table_name, rows_with_null_key
FROM (
    SELECT 'bytes_agg_antenna_1h' AS table_name, count(*) AS rows_with_null_key
    FROM bytes_agg_antenna_1h WHERE date = %(hour)s AND antenna_id IS NULL
    UNION ALL
    SELECT 'bytes_agg_user_1h', count(*) FROM bytes_agg_user_1h WHERE date = %(hour)s AND email IS NULL
    UNION ALL
    SELECT 'bytes_agg_app_1h', count(*) FROM bytes_agg_app_1h WHERE date = %(hour)s AND app IS NULL
    UNION ALL
    SELECT 'users_over_quota_1h', count(*) FROM users_over_quota_1h WHERE date = %(hour)s AND email IS NULL
) AS null_keys
WHERE rows_with_null_key > 0
ORDER BY table_name;
