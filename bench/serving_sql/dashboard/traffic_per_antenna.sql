-- Chart "Traffic per antenna": bytes per antenna and hour (or the time grain) over the time range.
SELECT DATE_TRUNC(%(grain)s, date) AS date, antenna_id AS antenna_id, sum(sum_antenna_bytes) AS bytes
FROM public.serving_antenna_hourly
WHERE date >= TO_TIMESTAMP(%(start)s, 'YYYY-MM-DD HH24:MI:SS.US') AND date < TO_TIMESTAMP(%(end)s, 'YYYY-MM-DD HH24:MI:SS.US')
GROUP BY DATE_TRUNC(%(grain)s, date), antenna_id
ORDER BY bytes DESC
LIMIT 10000;
