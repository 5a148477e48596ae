-- Chart "Traffic per antenna": bytes per antenna and hour over the dashboard's time range.
SELECT DATE_TRUNC('hour', date) AS date, antenna_id, sum(sum_antenna_bytes) AS bytes
FROM public.serving_antenna_hourly
WHERE date >= %(start)s AND date < %(end)s
GROUP BY DATE_TRUNC('hour', date), antenna_id
ORDER BY bytes DESC
LIMIT 10000;
