-- ptrack 2.2 -> 2.3: no change to the SQL objects. Re-created to call this library's entry
-- points, for installations made by the original C ptrack at 2.2.
CREATE OR REPLACE FUNCTION ptrack_version() RETURNS text IMMUTABLE STRICT
    LANGUAGE c AS 'MODULE_PATHNAME', 'ptrack_version_wrapper';
CREATE OR REPLACE FUNCTION ptrack_init_lsn() RETURNS pg_lsn VOLATILE
    LANGUAGE c AS 'MODULE_PATHNAME', 'ptrack_init_lsn_wrapper';
CREATE OR REPLACE FUNCTION ptrack_get_pagemapset(start_lsn pg_lsn)
    RETURNS TABLE (path text, pagecount bigint, pagemap bytea) STRICT VOLATILE
    LANGUAGE c AS 'MODULE_PATHNAME', 'ptrack_get_pagemapset_wrapper';
