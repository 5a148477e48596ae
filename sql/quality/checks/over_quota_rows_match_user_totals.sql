-- users_over_quota_1h holds exactly the users whose hourly total in bytes_agg_user_1h is strictly
-- above their quota in user_metadata, each with that quota and that total (docs/contract.md §7, §8).
-- Parameter %(hour)s: the start of the UTC hour. Each row returned is a violation.
WITH listed AS (
    SELECT email, quota, sum_user_bytes FROM users_over_quota_1h WHERE date = %(hour)s
), user_totals AS (
    SELECT totals.email, users.quota, totals.sum_user_bytes
    FROM bytes_agg_user_1h AS totals
    LEFT JOIN user_metadata AS users USING (email)
    WHERE totals.date = %(hour)s
), compared AS (
    SELECT coalesce(listed.email, user_totals.email) AS email,
           listed.email IS NOT NULL AS is_listed,
           listed.quota AS listed_quota,
           user_totals.quota AS metadata_quota,
           listed.sum_user_bytes AS listed_bytes,
           user_totals.sum_user_bytes AS user_total_bytes
    FROM listed
    FULL JOIN user_totals ON user_totals.email = listed.email
)
SELECT email, problem, listed_quota, metadata_quota, listed_bytes, user_total_bytes
FROM compared
CROSS JOIN LATERAL (SELECT CASE
    WHEN NOT is_listed AND user_total_bytes > metadata_quota THEN 'over quota but not listed'
    WHEN is_listed AND user_total_bytes IS NULL THEN 'listed without a row in bytes_agg_user_1h'
    WHEN is_listed AND metadata_quota IS NULL THEN 'listed but not in user_metadata'
    WHEN is_listed AND listed_quota <> metadata_quota THEN 'listed quota differs from user_metadata'
    WHEN is_listed AND listed_bytes <> user_total_bytes THEN 'listed total differs from bytes_agg_user_1h'
    WHEN is_listed AND user_total_bytes <= metadata_quota THEN 'listed but not over quota'
END AS problem) AS verdict
WHERE problem IS NOT NULL
ORDER BY email;
