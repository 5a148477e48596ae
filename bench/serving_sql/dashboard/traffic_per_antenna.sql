-- Chart "Traffic per antenna": bytes per antenna and hour over the dashboard's time range.
SELECT DATE_TRUNC('hour', date) AS date, antenna_id, sum(sum_antenna_bytes) AS bytes
FROM public.serving_antenna_hourly
WHERE date >= TO_TIMESTAMP(%(start)s, 'YYYY-MM-DD HH24:MI:SS.US') AND date < TO_TIMESTAMP(%(end)s, 'YYYY-MM-DD HH24:MI:SS.US')
GROUP BY DATE_TRUNC('hour', date), antenna_id
ORDER BY bytes DESC
LIMIT 10000;
