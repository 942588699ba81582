-- Run by psql as the backup login itself (files/pg_backup_role.ps1): one line "t" when it may read all data and
-- create databases (a drill's scratch copy) and is nothing more; anything else (or a failed login) makes the script
-- apply backup_role.sql.
SELECT pg_has_role(current_user, 'pg_read_all_data', 'USAGE')
       AND NOT r.rolsuper AND NOT r.rolcreaterole AND r.rolcreatedb AND NOT r.rolreplication AND NOT r.rolbypassrls
  FROM pg_roles r WHERE r.rolname = current_user;
