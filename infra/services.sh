#!/usr/bin/env bash
# Shared helpers (sourced): make MariaDB and PostgreSQL run on this machine, installing them
# from Debian when missing. Used by infra/test-services.sh and infra/stack.sh.
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

ensure_mariadb() {
  if ! command -v mariadbd >/dev/null && [ ! -x /usr/sbin/mariadbd ]; then
    echo "installing MariaDB (Debian package mariadb-server)"
    apt_install mariadb-server mariadb-client
  fi
  if ! $SUDO mariadb-admin --protocol=socket ping >/dev/null 2>&1; then
    echo "starting MariaDB"
    $SUDO mkdir -p /run/mysqld && { $SUDO chown mysql:mysql /run/mysqld 2>/dev/null || true; }
    $SUDO start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql
    wait_for MariaDB $SUDO mariadb-admin --protocol=socket ping
  fi
}

mariadb_user() {  # user password [database]: an account on 127.0.0.1 (and its database)
  local user=$1 password=$2 database=${3:-}
  local grant="ALL PRIVILEGES ON *.*"
  [ -n "$database" ] && grant="ALL PRIVILEGES ON \`$database\`.*"
  $SUDO mariadb --protocol=socket -e "
    ${database:+CREATE DATABASE IF NOT EXISTS \`$database\`;}
    CREATE USER IF NOT EXISTS '$user'@'127.0.0.1' IDENTIFIED BY '$password';
    CREATE USER IF NOT EXISTS '$user'@'localhost' IDENTIFIED BY '$password';
    GRANT $grant TO '$user'@'127.0.0.1';
    GRANT $grant TO '$user'@'localhost';"
}

ensure_postgres() {
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    echo "installing PostgreSQL (Debian package postgresql)"
    apt_install postgresql
  fi
  if ! pg_isready -h 127.0.0.1 -p 5432 >/dev/null 2>&1; then
    echo "starting PostgreSQL"
    $SUDO pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start
    wait_for PostgreSQL pg_isready -h 127.0.0.1 -p 5432
  fi
}

postgres_superuser() {  # user password
  $SUDO su postgres -c "psql -qtAc \"SELECT 1 FROM pg_roles WHERE rolname='$1'\"" | grep -q 1 ||
    $SUDO su postgres -c "psql -qc \"CREATE ROLE $1 LOGIN SUPERUSER PASSWORD '$2'\""
}
