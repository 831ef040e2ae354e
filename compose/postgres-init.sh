#!/usr/bin/env bash
# Runs once, when the PostgreSQL volume is empty: one database and one role per hospital.
set -euo pipefail
for site in hospital_a hospital_b hospital_c; do
  var="$(echo "${site}_DB_PASSWORD" | tr '[:lower:]' '[:upper:]')"
  password="${!var:?$var is not set (see compose/.env.example)}"
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --set=site="$site" --set=password="$password" <<'SQL'
CREATE ROLE :"site" LOGIN PASSWORD :'password';
CREATE DATABASE :"site" OWNER :"site";
REVOKE ALL ON DATABASE :"site" FROM PUBLIC;
SQL
done
