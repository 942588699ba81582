-- A backup drill's steps in PostgreSQL (files/postgresql/prefect_backup.ps1), run by psql as the backup login (CREATEDB, no
-- more), the scratch database's name in the variable scratch, the step in action:
--   create  (connected to the Prefect database) the scratch database dropped if a killed drill left it, and made
--           empty from template0 with the Prefect database's encoding; pg_restore then fills it as its owner.
--   check   (connected to the scratch database) its tables' rows counted (backup_counts.sql) and compared with the
--           counts taken in the dump's snapshot (the dump's <dump>.json, whose "tables" are backup_counts.sql's
--           output, in the environment variable DRILL_EXPECTED): one line
--           "MISMATCH <table> expected=<n> restored=<n>" per difference, then "TABLES <n> ROWS <n>".
--   drop    (connected to the Prefect database) the scratch database dropped.
-- A refusal prints "REFUSED <why>"; it and anything unexpected stop psql with exit code 3 (ON_ERROR_STOP).
\set ON_ERROR_STOP on
SET client_min_messages = warning;
\set refuse 'DO $$BEGIN RAISE EXCEPTION $r$refused, nothing was changed$r$; END$$;'
SELECT :'action' = 'create' AS creating, :'action' = 'check' AS checking, :'action' = 'drop' AS dropping,
       :'scratch' = current_database() AS here \gset
\if :creating
  \if :here
    \echo REFUSED the scratch database :scratch is the database connected to
    :refuse
  \endif
  SELECT pg_encoding_to_char(encoding) AS encoding FROM pg_database WHERE datname = current_database() \gset
  SELECT format('DROP DATABASE IF EXISTS %I', :'scratch') \gexec
  SELECT format('CREATE DATABASE %I TEMPLATE template0 ENCODING %L', :'scratch', :'encoding') \gexec
  \echo OK create
\elif :checking
  \getenv expected DRILL_EXPECTED
  \ir backup_counts.sql
  SELECT format('MISMATCH %s expected=%s restored=%s', coalesce(e.key, a.key), coalesce(e.value::text, 'none'),
                coalesce(a.value::text, 'none'))
    FROM jsonb_each((:'expected'::jsonb) -> 'tables') e FULL JOIN jsonb_each(:'counts'::jsonb) a ON a.key = e.key
   WHERE e.value IS DISTINCT FROM a.value
   ORDER BY 1;
  SELECT format('TABLES %s ROWS %s', count(*), coalesce(sum(value::text::bigint), 0)) FROM jsonb_each(:'counts'::jsonb);
\elif :dropping
  \if :here
    \echo REFUSED the scratch database :scratch is the database connected to
    :refuse
  \endif
  SELECT format('DROP DATABASE IF EXISTS %I', :'scratch') \gexec
  \echo OK drop
\else
  \echo REFUSED action must be create, check or drop
  :refuse
\endif
