-- Chart "Traffic by answering layer": bytes per hour, one series per layer (batch or speed).
SELECT DATE_TRUNC('hour', date) AS date, layer, sum(sum_antenna_bytes) AS bytes
FROM public.serving_antenna_hourly
WHERE date >= %(start)s AND date < %(end)s
GROUP BY DATE_TRUNC('hour', date), layer
ORDER BY bytes DESC
LIMIT 10000;
