-- Chart "Users over quota": the current hour (speed layer) and the closed hours (batch layer).
SELECT date AS date, layer AS layer, email AS email, sum_user_bytes AS sum_user_bytes, quota AS quota
FROM public.serving_users_over_quota
WHERE date >= TO_TIMESTAMP(%(start)s, 'YYYY-MM-DD HH24:MI:SS.US') AND date < TO_TIMESTAMP(%(end)s, 'YYYY-MM-DD HH24:MI:SS.US')
ORDER BY date DESC, sum_user_bytes DESC
LIMIT 1000;
