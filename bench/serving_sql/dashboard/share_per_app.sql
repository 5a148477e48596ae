-- Chart "Share per app": bytes per app over the time range.
SELECT app, sum(sum_app_bytes) AS bytes
FROM public.serving_app_hourly
WHERE date >= %(start)s AND date < %(end)s
GROUP BY app
ORDER BY bytes DESC
LIMIT 100;
