-- ptrack 2.1 -> 2.2. Also the way in from an installation of the original C ptrack: its
-- functions call that library's entry points, so every function is re-created here to call this
-- library's. 2.2 adds pagecount to ptrack_get_pagemapset and ptrack_get_change_stat.
CREATE OR REPLACE FUNCTION ptrack_version() RETURNS text IMMUTABLE STRICT
    LANGUAGE c AS 'MODULE_PATHNAME', 'ptrack_version_wrapper';
CREATE OR REPLACE FUNCTION ptrack_init_lsn() RETURNS pg_lsn VOLATILE
    LANGUAGE c AS 'MODULE_PATHNAME', 'ptrack_init_lsn_wrapper';
DROP FUNCTION ptrack_get_pagemapset(pg_lsn);
CREATE FUNCTION ptrack_get_pagemapset(start_lsn pg_lsn)
    RETURNS TABLE (path text, pagecount bigint, pagemap bytea) STRICT VOLATILE
    LANGUAGE c AS 'MODULE_PATHNAME', 'ptrack_get_pagemapset_wrapper';
CREATE FUNCTION ptrack_get_change_stat(start_lsn pg_lsn)
    RETURNS TABLE (files bigint, pages numeric, "size, MB" numeric)
AS $body$
DECLARE
    page_bytes bigint := current_setting('block_size')::bigint;
BEGIN
    RETURN QUERY
        SELECT count(m.path), sum(m.pagecount)::numeric,
               page_bytes * sum(m.pagecount)::numeric / (1024.0 * 1024)
        FROM ptrack_get_pagemapset(start_lsn) AS m;
END
$body$ LANGUAGE plpgsql;
