-- Chart "Share per app": bytes per app over the time range.
SELECT app AS app, sum(sum_app_bytes) AS bytes
FROM public.serving_app_hourly
WHERE date >= TO_TIMESTAMP(%(start)s, 'YYYY-MM-DD HH24:MI:SS.US') AND date < TO_TIMESTAMP(%(end)s, 'YYYY-MM-DD HH24:MI:SS.US')
GROUP BY app
ORDER BY bytes DESC
LIMIT 100;
