-- The PostgreSQL login the scheduled pg_dump uses (roles/backup, files/pg_backup_role.ps1): it may read every object
-- of every database (pg_read_all_data, PostgreSQL 14+), connect to the Prefect database and create databases (a
-- drill's scratch copy, files/postgresql/backup_drill.sql: the login owns that copy and may drop it; it may not drop or alter
-- a database it does not own), nothing else. Run by
-- psql as a superuser; the names and the password come from the environment (psql \getenv), never a command line.
-- Idempotent: running it again changes nothing but the password, set again from the environment.
\set ON_ERROR_STOP on
\getenv backup_role BACKUP_ROLE
\getenv backup_password BACKUP_ROLE_PASSWORD
\getenv backup_database BACKUP_DATABASE
-- Keep the password out of the server log whatever log_statement says.
SET log_statement = 'none';
SET log_min_duration_statement = -1;
SET log_min_error_statement = 'panic';
SELECT format('CREATE ROLE %I LOGIN', :'backup_role')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'backup_role') \gexec
SELECT format('ALTER ROLE %I WITH LOGIN INHERIT NOSUPERUSER CREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD %L',
              :'backup_role', :'backup_password') \gexec
SELECT format('GRANT pg_read_all_data TO %I', :'backup_role') \gexec
SELECT format('GRANT CONNECT ON DATABASE %I TO %I', :'backup_database', :'backup_role') \gexec
