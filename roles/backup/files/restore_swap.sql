-- The database-level steps of a restore into an empty database (roles/backup, files/backup_restore.ps1), run by psql as
-- the superuser on the database host: SQL on stdin, the password in psql's environment. psql variables (names, from
-- the command line): database, role (its owner), aside (where the current database waits), action:
--   swap  the database stops taking connections, its sessions are ended, it is renamed to aside, and an empty one is
--         created in its place from template0, owned by role, with aside's encoding, locale, tablespace, connection
--         limit, privileges and settings (pg_restore then fills it without --clean: nothing of a newer schema can
--         survive or block the restore, whatever the dump holds);
--   undo  the database made by swap is dropped and aside renamed back (a restore that failed after the swap);
--   drop  aside is dropped (the restored database was checked).
-- Prints one line: "OK <what was done>", or "REFUSED <why>" and exits with 3 having changed nothing (psql's \quit
-- takes no exit code: a statement that fails under ON_ERROR_STOP gives psql's 3).
\set ON_ERROR_STOP on
\set refuse 'DO $$BEGIN RAISE EXCEPTION $r$refused, nothing was changed$r$; END$$;'
\set QUIET on
\pset tuples_only on
\pset format unaligned
SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'database') AS has_database,
       EXISTS (SELECT 1 FROM pg_database WHERE datname = :'aside') AS has_aside,
       :'action' = 'swap' AS is_swap, :'action' = 'undo' AS is_undo, :'action' = 'drop' AS is_drop \gset
SELECT set_config('enclave.target', :'database', false) IS NULL AS unused \gset

\if :is_swap
  \if :has_aside
    \echo REFUSED database :aside exists, left by an interrupted restore: compare it with :database, then drop or rename it
    :refuse
  \endif
  \if :has_database
  \else
    \echo REFUSED database :database does not exist: run the postgresql role first (site.yml --tags postgresql)
    :refuse
  \endif
  ALTER DATABASE :"database" ALLOW_CONNECTIONS false;
  -- Sessions end a moment after pg_terminate_backend returns; the rename needs them gone.
  DO $$
  BEGIN
    FOR i IN 1..300 LOOP
      PERFORM pg_stat_clear_snapshot();
      PERFORM pg_terminate_backend(pid) FROM pg_stat_activity
        WHERE datname = current_setting('enclave.target') AND pid <> pg_backend_pid();
      PERFORM pg_stat_clear_snapshot();
      EXIT WHEN NOT EXISTS (SELECT 1 FROM pg_stat_activity
                             WHERE datname = current_setting('enclave.target') AND pid <> pg_backend_pid());
      PERFORM pg_sleep(0.1);
    END LOOP;
  END
  $$;
  ALTER DATABASE :"database" RENAME TO :"aside";
  -- The new database as the old one was made (PostgreSQL 15 to 17: the locale columns are read through to_jsonb).
  SELECT format('CREATE DATABASE %I OWNER %I TEMPLATE template0 ENCODING %L LC_COLLATE %L LC_CTYPE %L%s TABLESPACE %I CONNECTION LIMIT %s',
                :'database', :'role', pg_encoding_to_char(d.encoding), d.datcollate, d.datctype,
                CASE j ->> 'datlocprovider'
                  WHEN 'i' THEN format(' LOCALE_PROVIDER icu ICU_LOCALE %L', coalesce(j ->> 'datlocale', j ->> 'daticulocale'))
                  WHEN 'b' THEN format(' LOCALE_PROVIDER builtin BUILTIN_LOCALE %L', j ->> 'datlocale')
                  ELSE '' END,
                t.spcname, d.datconnlimit)
    FROM pg_database d CROSS JOIN LATERAL to_jsonb(d) AS j JOIN pg_tablespace t ON t.oid = d.dattablespace
   WHERE d.datname = :'aside' \gexec
  -- Privileges: the same list (NULL is the default one, which the new database has already).
  SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC, %I', :'database', :'role')
    FROM pg_database WHERE datname = :'aside' AND datacl IS NOT NULL \gexec
  SELECT format('GRANT %s ON DATABASE %I TO %s%s', a.privilege_type, :'database',
                CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END,
                CASE WHEN a.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END)
    FROM pg_database d CROSS JOIN LATERAL aclexplode(d.datacl) AS a
   WHERE d.datname = :'aside' \gexec
  -- Settings of the database, and of roles in it. A list value is kept as written (search_path = "$user", public is
  -- stored as `"$user", public`); any other value as one literal.
  SELECT CASE WHEN s.setrole = 0 THEN format('ALTER DATABASE %I SET %I TO %s', :'database', split_part(c, '=', 1), v)
              ELSE format('ALTER ROLE %I IN DATABASE %I SET %I TO %s', pg_get_userbyid(s.setrole), :'database',
                          split_part(c, '=', 1), v) END
    FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase CROSS JOIN LATERAL unnest(s.setconfig) AS c
         CROSS JOIN LATERAL (SELECT CASE WHEN substr(c, strpos(c, '=') + 1) ~ ','
                                         THEN substr(c, strpos(c, '=') + 1)
                                         ELSE quote_literal(substr(c, strpos(c, '=') + 1)) END AS v) AS value
   WHERE d.datname = :'aside' \gexec
  \echo OK swap :database renamed to :aside and created empty
\elif :is_undo
  \if :has_aside
    \if :has_database
      DROP DATABASE :"database" WITH (FORCE);
    \endif
    ALTER DATABASE :"aside" RENAME TO :"database";
    ALTER DATABASE :"database" ALLOW_CONNECTIONS true;
    \echo OK undo :database is the database from before the restore again
  \elif :has_database
    -- The swap stopped before its rename (sessions that would not end): the database is still the one from before,
    -- closed to connections by the swap's first step.
    ALTER DATABASE :"database" ALLOW_CONNECTIONS true;
    \echo OK undo :database was not renamed and takes connections again
  \else
    \echo REFUSED neither :database nor :aside exists: restore the backup by hand
    :refuse
  \endif
\elif :is_drop
  \if :has_database
  \else
    \echo REFUSED database :database does not exist: :aside kept
    :refuse
  \endif
  \if :has_aside
    DROP DATABASE :"aside" WITH (FORCE);
    \echo OK drop :aside dropped
  \else
    \echo OK drop :aside was not there
  \endif
\else
  \echo REFUSED unknown action :action
  :refuse
\endif
