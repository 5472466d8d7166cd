#!/usr/bin/env bash
# Bring up the servers the test suite talks to, installing them from Debian when missing:
#   MariaDB on 127.0.0.1:3306 and PostgreSQL on 127.0.0.1:5432, each with a test account
#   atm_test/atm_test that may create databases. (moto's S3 server comes with the Python
#   test extras; the tests start and stop it themselves.)
set -euo pipefail
SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
APT_UPDATED=
apt_install() {
  [ -n "$APT_UPDATED" ] || { $SUDO apt-get update -qq; APT_UPDATED=1; }
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
wait_for() {  # description, command...
  local what=$1; shift
  for _ in $(seq 60); do "$@" >/dev/null 2>&1 && return 0; sleep 1; done
  echo "$what did not come up" >&2; return 1
}

# -- MariaDB ----------------------------------------------------------------------------------
mariadb_up() { mariadb-admin --protocol=socket ping >/dev/null 2>&1 || mariadb-admin -h127.0.0.1 -uatm_test -patm_test ping >/dev/null 2>&1; }
if ! command -v mariadbd >/dev/null && [ ! -x /usr/sbin/mariadbd ]; then
  echo "installing MariaDB (Debian package mariadb-server)"
  apt_install mariadb-server mariadb-client
fi
if ! mariadb_up; then
  echo "starting MariaDB"
  $SUDO mkdir -p /run/mysqld && $SUDO chown mysql:mysql /run/mysqld 2>/dev/null || true
  $SUDO start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql
  wait_for MariaDB mariadb-admin --protocol=socket ping
fi
$SUDO mariadb --protocol=socket -e "
  CREATE USER IF NOT EXISTS 'atm_test'@'127.0.0.1' IDENTIFIED BY 'atm_test';
  CREATE USER IF NOT EXISTS 'atm_test'@'localhost' IDENTIFIED BY 'atm_test';
  GRANT ALL PRIVILEGES ON *.* TO 'atm_test'@'127.0.0.1';
  GRANT ALL PRIVILEGES ON *.* TO 'atm_test'@'localhost';"

# -- PostgreSQL -------------------------------------------------------------------------------
if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
  echo "installing PostgreSQL (Debian package postgresql)"
  apt_install postgresql
fi
if ! pg_isready -h 127.0.0.1 -p 5432 >/dev/null 2>&1; then
  echo "starting PostgreSQL"
  $SUDO pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start
  wait_for PostgreSQL pg_isready -h 127.0.0.1 -p 5432
fi
$SUDO su postgres -c "psql -qtAc \"SELECT 1 FROM pg_roles WHERE rolname='atm_test'\"" | grep -q 1 ||
  $SUDO su postgres -c "psql -qc \"CREATE ROLE atm_test LOGIN SUPERUSER PASSWORD 'atm_test'\""
echo "test services up: MariaDB 127.0.0.1:3306, PostgreSQL 127.0.0.1:5432 (user atm_test)"
