#!/bin/sh
# docker-compose.yml: run once by the postgres image's entrypoint after initdb (mounted into
# /docker-entrypoint-initdb.d). The image's pg_hba.conf lets `all` databases in from the network,
# which does not cover replication connections; the cluster profile's replica needs one.
set -eu
echo "host replication all all ${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}" >> "$PGDATA/pg_hba.conf"
