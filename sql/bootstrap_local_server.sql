-- Run by `make up` (`python -m localstack up`) as the superuser of the local server it started, with psql
-- variables `role`, `password` and `dbname` taken from the DSN. Creates only what is missing, so it
-- can run on every `up`. CREATEDB lets tests create and drop scratch databases.
SELECT format('CREATE ROLE %I LOGIN CREATEDB PASSWORD %L', :'role', :'password')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'role')
\gexec

SELECT format('CREATE DATABASE %I OWNER %I', :'dbname', :'role')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'dbname')
\gexec
