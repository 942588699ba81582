-- The Prefect role, its database and pg_trgm (enclave.prefect.postgresql, files/prefect_objects.ps1 runs it with psql
-- as the superuser). Idempotent: each object is compared first and changed only when it differs; every change prints
-- one line "CHANGED <what>" and nothing else is printed. psql variables: role, database (names, from the command
-- line), apply (false in check mode: compare and report only), and on a replication primary replication_role and slot. The role's password comes from the environment
-- variable PREFECT_DB_PASSWORD (\getenv, psql 15+), never from the command line.
\set ON_ERROR_STOP on
\set QUIET on
\pset tuples_only on
\pset format unaligned
\getenv password PREFECT_DB_PASSWORD
\if :{?password}
\else
  -- psql's \quit takes no exit code: a statement that fails under ON_ERROR_STOP makes psql exit with 3.
  DO $$BEGIN RAISE EXCEPTION 'PREFECT_DB_PASSWORD is not set'; END$$;
\endif
-- Statements below carry the password: keep them out of the server log even when one fails (superuser settings).
SET log_statement = 'none';
SET log_min_error_statement = 'panic';
SET log_min_duration_statement = -1;
SELECT set_config('enclave.password', :'password', false) IS NULL AS unused \gset

-- The stored SCRAM verifier (SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>, RFC 5802/7677) is compared
-- with the password by recomputing StoredKey and ServerKey with the stored salt and iteration count: a second run
-- with the same password changes nothing, a new password is set. An md5 or empty password never matches.
CREATE FUNCTION pg_temp.hmac(key bytea, message bytea) RETURNS bytea LANGUAGE plpgsql IMMUTABLE AS $fn$
DECLARE
  k bytea := CASE WHEN length(key) > 64 THEN sha256(key) ELSE key END;
  ipad bytea;
  opad bytea;
BEGIN
  k := k || decode(repeat('00', 64 - length(k)), 'hex');
  ipad := k;
  opad := k;
  FOR i IN 0..63 LOOP
    ipad := set_byte(ipad, i, get_byte(k, i) # 54);
    opad := set_byte(opad, i, get_byte(k, i) # 92);
  END LOOP;
  RETURN sha256(opad || sha256(ipad || message));
END
$fn$;

CREATE FUNCTION pg_temp.scram_matches(verifier text, password text) RETURNS boolean LANGUAGE plpgsql AS $fn$
DECLARE
  parts text[] := regexp_match(verifier, '^SCRAM-SHA-256\$([0-9]+):([^$]+)\$([^:]+):(.+)$');
  iterations int;
  u bytea;
  acc bit(256);
  salted bytea;
  pw bytea := convert_to(password, 'UTF8');
  k bytea;
  ipad bytea;
  opad bytea;
BEGIN
  IF parts IS NULL THEN
    RETURN false;
  END IF;
  iterations := parts[1]::int;
  -- PBKDF2-HMAC-SHA256 with one 32-byte block; the key's pads are computed once.
  k := CASE WHEN length(pw) > 64 THEN sha256(pw) ELSE pw END;
  k := k || decode(repeat('00', 64 - length(k)), 'hex');
  ipad := k;
  opad := k;
  FOR i IN 0..63 LOOP
    ipad := set_byte(ipad, i, get_byte(k, i) # 54);
    opad := set_byte(opad, i, get_byte(k, i) # 92);
  END LOOP;
  u := sha256(opad || sha256(ipad || decode(parts[2], 'base64') || '\x00000001'::bytea));
  acc := ('x' || encode(u, 'hex'))::bit(256);
  FOR i IN 2..iterations LOOP
    u := sha256(opad || sha256(ipad || u));
    acc := acc # ('x' || encode(u, 'hex'))::bit(256);
  END LOOP;
  salted := decode(lpad(to_hex(substring(acc FROM 1 FOR 32)::int), 8, '0')
                   || lpad(to_hex(substring(acc FROM 33 FOR 32)::int), 8, '0')
                   || lpad(to_hex(substring(acc FROM 65 FOR 32)::int), 8, '0')
                   || lpad(to_hex(substring(acc FROM 97 FOR 32)::int), 8, '0')
                   || lpad(to_hex(substring(acc FROM 129 FOR 32)::int), 8, '0')
                   || lpad(to_hex(substring(acc FROM 161 FOR 32)::int), 8, '0')
                   || lpad(to_hex(substring(acc FROM 193 FOR 32)::int), 8, '0')
                   || lpad(to_hex(substring(acc FROM 225 FOR 32)::int), 8, '0'), 'hex');
  RETURN sha256(pg_temp.hmac(salted, convert_to('Client Key', 'UTF8'))) = decode(parts[3], 'base64')
     AND pg_temp.hmac(salted, convert_to('Server Key', 'UTF8')) = decode(parts[4], 'base64');
END
$fn$;

-- The role: LOGIN, nothing more, the password from Vault.
SELECT NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'role') AS role_missing \gset
\if :role_missing
  \echo CHANGED role :role created
  \if :apply
    CREATE ROLE :"role" LOGIN PASSWORD :'password';
  \endif
\else
  SELECT NOT (rolcanlogin AND NOT rolsuper AND NOT rolcreatedb AND NOT rolcreaterole AND NOT rolreplication
              AND NOT rolbypassrls) AS role_differs
    FROM pg_roles WHERE rolname = :'role' \gset
  \if :role_differs
    \echo CHANGED role :role attributes LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
    \if :apply
      ALTER ROLE :"role" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
    \endif
  \endif
  SELECT NOT coalesce(pg_temp.scram_matches(rolpassword, current_setting('enclave.password')), false) AS password_differs
    FROM pg_authid WHERE rolname = :'role' \gset
  \if :password_differs
    \echo CHANGED role :role password
    \if :apply
      ALTER ROLE :"role" PASSWORD :'password';
    \endif
  \endif
\endif
SELECT set_config('enclave.password', '', false) IS NULL AS unused \gset

-- Streaming replication, on the primary of a primary/standby pair (psql variables replication_role and slot): the
-- replication role, LOGIN REPLICATION and nothing more, its password from PREFECT_REPLICATION_PASSWORD, and the
-- standby's physical slot (WAL is kept for it from its first connection on, up to max_slot_wal_keep_size).
\if :{?replication_role}
  \getenv replication_password PREFECT_REPLICATION_PASSWORD
  \if :{?replication_password}
  \else
    DO $$BEGIN RAISE EXCEPTION 'PREFECT_REPLICATION_PASSWORD is not set'; END$$;
  \endif
  SELECT set_config('enclave.password', :'replication_password', false) IS NULL AS unused \gset
  SELECT NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'replication_role') AS replication_role_missing \gset
  \if :replication_role_missing
    \echo CHANGED role :replication_role created
    \if :apply
      CREATE ROLE :"replication_role" LOGIN REPLICATION PASSWORD :'replication_password';
    \endif
  \else
    SELECT NOT (rolcanlogin AND rolreplication AND NOT rolsuper AND NOT rolcreatedb AND NOT rolcreaterole
                AND NOT rolbypassrls) AS replication_role_differs
      FROM pg_roles WHERE rolname = :'replication_role' \gset
    \if :replication_role_differs
      \echo CHANGED role :replication_role attributes LOGIN REPLICATION NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS
      \if :apply
        ALTER ROLE :"replication_role" LOGIN REPLICATION NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS;
      \endif
    \endif
    SELECT NOT coalesce(pg_temp.scram_matches(rolpassword, current_setting('enclave.password')), false)
           AS replication_password_differs
      FROM pg_authid WHERE rolname = :'replication_role' \gset
    \if :replication_password_differs
      \echo CHANGED role :replication_role password
      \if :apply
        ALTER ROLE :"replication_role" PASSWORD :'replication_password';
      \endif
    \endif
  \endif
  \unset replication_password
  SELECT set_config('enclave.password', '', false) IS NULL AS unused \gset
  SELECT NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = :'slot') AS slot_missing,
         EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = :'slot' AND wal_status = 'lost') AS slot_lost \gset
  -- A slot whose WAL went past max_slot_wal_keep_size is lost for good (PostgreSQL 13+): made again, and the standby
  -- that used it must be seeded again.
  \if :slot_lost
    \echo CHANGED replication slot :slot made again (its WAL was lost: seed the standby again)
    \if :apply
      SELECT pg_drop_replication_slot(:'slot') IS NULL AS unused \gset
      SELECT pg_create_physical_replication_slot(:'slot') IS NULL AS unused \gset
    \endif
  \elif :slot_missing
    \echo CHANGED replication slot :slot created
    \if :apply
      SELECT pg_create_physical_replication_slot(:'slot') IS NULL AS unused \gset
    \endif
  \endif
\endif

-- The database, owned by the role (GRANT ALL is not enough on PostgreSQL 15+: public is no longer writable by all).
SELECT NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'database') AS database_missing \gset
\if :database_missing
  \echo CHANGED database :database created
  \if :apply
    CREATE DATABASE :"database" OWNER :"role" ENCODING 'UTF8' TEMPLATE template0;
  \endif
\else
  SELECT pg_get_userbyid(datdba) <> :'role' AS owner_differs FROM pg_database WHERE datname = :'database' \gset
  \if :owner_differs
    \echo CHANGED database :database owner :role
    \if :apply
      ALTER DATABASE :"database" OWNER TO :"role";
    \endif
  \endif
\endif

-- pg_trgm (Prefect's migrations need it), created by the owner: a trusted extension since PostgreSQL 13.
\if :database_missing
  \if :apply
    \set check_extension true
  \else
    \echo CHANGED extension pg_trgm created
    \set check_extension false
  \endif
\else
  \set check_extension true
\endif
\if :check_extension
  \connect :"database"
  SET log_statement = 'none';
  SELECT NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm') AS extension_missing \gset
  \if :extension_missing
    \echo CHANGED extension pg_trgm created
    \if :apply
      SET ROLE :"role";
      CREATE EXTENSION pg_trgm;
      RESET ROLE;
    \endif
  \endif
  -- Per-table autovacuum of Prefect's docs (How to maintain your Prefect database, "Tune autovacuum for Prefect
  -- workloads"), once Prefect's migrations have created the tables (the run after the server's first start).
  SELECT string_agg(format('ALTER TABLE public.%I SET (%s);', t.name, t.options), ' ') AS autovacuum_sql,
         string_agg(t.name, ', ') AS autovacuum_tables
    FROM (VALUES ('events', 'autovacuum_vacuum_scale_factor=0.05,autovacuum_vacuum_threshold=1000,autovacuum_analyze_scale_factor=0.02'),
                 ('flow_run_state', 'autovacuum_vacuum_scale_factor=0.1,autovacuum_analyze_scale_factor=0.05'),
                 ('flow_run', 'autovacuum_vacuum_scale_factor=0.1,autovacuum_vacuum_threshold=500')) AS t(name, options)
    JOIN pg_class c ON c.relname = t.name AND c.relnamespace = 'public'::regnamespace AND c.relkind = 'r'
   WHERE NOT (coalesce(c.reloptions, '{}') @> string_to_array(t.options, ',')) \gset
  \if :{?autovacuum_tables}
    SELECT :'autovacuum_tables' <> '' AS autovacuum_differs \gset
  \else
    \set autovacuum_differs false
  \endif
  \if :autovacuum_differs
    \echo CHANGED autovacuum settings of :autovacuum_tables
    \if :apply
      SELECT :'autovacuum_sql' \gexec
    \endif
  \endif
\endif
