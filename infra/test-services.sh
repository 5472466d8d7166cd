#!/usr/bin/env bash
# Bring up the servers the test suite talks to, installing them from Debian when missing:
# MariaDB on 127.0.0.1:3306 and PostgreSQL on 127.0.0.1:5432, each with a test account
# atm_test/atm_test that may create databases; and Debian's chromium, which the dashboard's
# browser test drives (playwright never downloads a browser here). (moto's S3 server comes
# with the Python test extras; the tests start and stop it themselves, as they do the Prefect
# server.)
set -euo pipefail
source "$(dirname "$0")/services.sh"
ensure_mariadb
mariadb_user atm_test atm_test
# an account whose password the secrets tests look for everywhere ATM or Prefect writes
mariadb_user atm_secret 'Kq7-sEcReT-pw9' atm_secret
ensure_postgres
postgres_superuser atm_test atm_test
if [ ! -x /usr/bin/chromium ]; then
  echo "installing Debian's chromium (for the dashboard's browser test)"
  apt_install chromium
fi
echo "test services up: MariaDB 127.0.0.1:3306, PostgreSQL 127.0.0.1:5432 (user atm_test); chromium"
