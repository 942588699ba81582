-- The scheduled PostgreSQL backup's first step (files/postgresql/prefect_backup.ps1): run as the backup login with
-- `psql -f backup_snapshot.sql -f -`, so that the session stays open on stdin. One read-only REPEATABLE READ
-- transaction exports its snapshot and counts every table's rows in it; the snapshot's name, the counts and the word
-- "ready" go to the file named by the variable out. The script then runs pg_dump --snapshot=<name>, so the dump holds
-- exactly the rows counted here, writes COMMIT on stdin and closes it. A drill compares a restore with these counts.
\set ON_ERROR_STOP on
BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;
SELECT pg_export_snapshot() AS snapshot \gset
\ir backup_counts.sql
\o :out
\qecho :snapshot
\qecho :counts
\qecho ready
\o
