#!/usr/bin/env bash
# The demo app's own check, run by the drill ("application starts"): it connects to the restored
# database the way the app does (DB_* variables, password from the environment, never on a
# command line) and runs the query its invoice list relies on.
set -euo pipefail
export MYSQL_PWD="${DB_PASSWORD:-}"
rows=$(mariadb --no-defaults --batch --skip-column-names -h "$DB_HOST" -P "$DB_PORT" -u "$DB_USERNAME" "$DB_DATABASE" -e "
  SELECT COUNT(*) FROM invoices i JOIN companies c ON c.id = i.company_id
  WHERE i.status IN ('listed', 'funded')")
echo "invoice list: $rows open invoices"
[ "$rows" -gt 0 ]
