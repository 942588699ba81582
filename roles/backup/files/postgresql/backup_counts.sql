-- Rows of every table of Prefect's schema (public), as one JSON object {"table": rows, ...} in the psql variable
-- counts. Included (\ir) by backup_snapshot.sql, in the transaction whose snapshot pg_dump then dumps, and by
-- backup_drill.sql in the scratch copy a drill restored, so both sides are counted by the same query.
SELECT coalesce(json_object_agg(c.relname, (xpath('/row/n/text()',
           query_to_xml(format('SELECT count(*) AS n FROM %I.%I', n.nspname, c.relname), false, true, '')))[1]::text::bigint
           ORDER BY c.relname), '{}') AS counts
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition
\gset
