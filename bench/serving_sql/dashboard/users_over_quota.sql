-- Chart "Users over quota": the current hour (speed layer) and the closed hours (batch layer).
SELECT date, email, sum_user_bytes, quota, layer
FROM public.serving_users_over_quota
WHERE date >= %(start)s AND date < %(end)s
ORDER BY date DESC, sum_user_bytes DESC
LIMIT 1000;
