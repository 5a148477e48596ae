-- Chart "Top users": the ten users with the most bytes over the time range.
SELECT email AS email, sum(sum_user_bytes) AS bytes
FROM public.serving_user_hourly
WHERE date >= TO_TIMESTAMP(%(start)s, 'YYYY-MM-DD HH24:MI:SS.US') AND date < TO_TIMESTAMP(%(end)s, 'YYYY-MM-DD HH24:MI:SS.US')
GROUP BY email
ORDER BY bytes DESC
LIMIT 10;
