-- Every user row of the hour belongs to a user of user_metadata (docs/contract.md §1: a device
-- that is not there is unknown and counts toward no user).
-- Parameter %(hour)s: the start of the UTC hour. Each row returned is a violation.
SELECT totals.email, totals.sum_user_bytes
FROM bytes_agg_user_1h AS totals
LEFT JOIN user_metadata AS users USING (email)
WHERE totals.date = %(hour)s AND users.email IS NULL
ORDER BY totals.email;
