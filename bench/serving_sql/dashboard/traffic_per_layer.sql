-- Chart "Traffic by answering layer": bytes per hour (or the time grain), one series per layer (batch or speed).
SELECT DATE_TRUNC(%(grain)s, date) AS date, layer AS layer, sum(sum_antenna_bytes) AS bytes
FROM public.serving_antenna_hourly
WHERE date >= TO_TIMESTAMP(%(start)s, 'YYYY-MM-DD HH24:MI:SS.US') AND date < TO_TIMESTAMP(%(end)s, 'YYYY-MM-DD HH24:MI:SS.US')
GROUP BY DATE_TRUNC(%(grain)s, date), layer
ORDER BY bytes DESC
LIMIT 10000;
