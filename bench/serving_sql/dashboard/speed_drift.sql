-- Chart "Speed-versus-batch drift": batch minus speed bytes per closed hour (or the time grain) and table.
SELECT DATE_TRUNC(%(grain)s, date) AS date, batch_table AS batch_table, sum(drift_bytes) AS drift_bytes
FROM public.serving_speed_drift
WHERE date >= TO_TIMESTAMP(%(start)s, 'YYYY-MM-DD HH24:MI:SS.US') AND date < TO_TIMESTAMP(%(end)s, 'YYYY-MM-DD HH24:MI:SS.US')
GROUP BY DATE_TRUNC(%(grain)s, date), batch_table
ORDER BY drift_bytes DESC
LIMIT 10000;
