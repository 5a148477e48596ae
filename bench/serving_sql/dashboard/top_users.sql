-- Chart "Top users": the ten users with the most bytes over the time range.
SELECT email, sum(sum_user_bytes) AS bytes
FROM public.serving_user_hourly
WHERE date >= %(start)s AND date < %(end)s
GROUP BY email
ORDER BY bytes DESC
LIMIT 10;
