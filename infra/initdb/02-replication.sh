#!/bin/sh
# Runs once, when the primary's data directory is created (docker-entrypoint-initdb.d): the
# role that infra/compose.yaml's db-replica streams from (pg_basebackup -R), and the pg_hba
# line that lets it connect for replication over the compose network. No default password:
# compose refuses to start without REPLICATION_PASSWORD.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v pw="$REPLICATION_PASSWORD" <<'SQL'
CREATE ROLE replicator WITH REPLICATION LOGIN PASSWORD :'pw';
SQL
echo "host replication replicator all scram-sha-256" >> "$PGDATA/pg_hba.conf"
