#!/bin/sh
# One database (and owner) per service. Runs once, on an empty postgres volume
# (mounted into /docker-entrypoint-initdb.d by infra/compose.yaml). Passwords come from the env.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v prefect_pw="$PREFECT_DB_PASSWORD" \
  -v mlflow_pw="$MLFLOW_DB_PASSWORD" \
  -v labelstudio_pw="$LABEL_STUDIO_DB_PASSWORD" \
  -v labelloop_pw="$LABELLOOP_DB_PASSWORD" <<'SQL'
CREATE USER prefect WITH PASSWORD :'prefect_pw';
CREATE DATABASE prefect OWNER prefect;
CREATE USER mlflow WITH PASSWORD :'mlflow_pw';
CREATE DATABASE mlflow OWNER mlflow;
CREATE USER labelstudio WITH PASSWORD :'labelstudio_pw';
CREATE DATABASE labelstudio OWNER labelstudio;
CREATE USER labelloop WITH PASSWORD :'labelloop_pw';
CREATE DATABASE labelloop OWNER labelloop;
SQL
