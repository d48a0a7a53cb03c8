//! A schema snapshot read from the system catalogs (not from `pg_dump`
//! text): every user object with the properties that give it meaning.

use std::collections::BTreeMap;

use postgres::Client;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::error::MigrateError;

/// Schemas that never belong to the user.
const NS: &str = "n.nspname NOT IN ('pg_catalog', 'information_schema') \
                  AND n.nspname !~ '^pg_(toast|temp_|toast_temp_)'";

/// Relations that are members of an extension (found through pg_depend's
/// index on the referenced object, not a scan of the whole table).
const NOT_EXT_CLASS: &str = "c.oid NOT IN (SELECT d.objid FROM pg_depend d \
                             WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e' \
                             AND d.classid = 'pg_class'::regclass)";

/// The tracking tables, which change with every migration by design.
const NOT_TRACKING: &str = "c.relname NOT IN ('__diesel_schema_migrations', '_sqlx_migrations')";

fn queries(server_version: i32) -> Vec<String> {
    let body = if server_version >= 140_000 {
        "COALESCE(pg_get_function_sqlbody(p.oid), p.prosrc)"
    } else {
        "p.prosrc"
    };
    format!(
        r#"
SELECT 'schema', n.nspname, '{{}}'
FROM pg_namespace n
WHERE {NS} AND n.oid NOT IN (SELECT d.objid FROM pg_depend d
                             WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
                               AND d.classid = 'pg_namespace'::regclass);

SELECT 'extension', e.extname, json_build_object('schema', n.nspname, 'version', e.extversion)::text
FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace;

SELECT CASE c.relkind WHEN 'v' THEN 'view' ELSE 'materialized_view' END,
       n.nspname || '.' || c.relname,
       json_build_object(
           'definition', pg_get_viewdef(c.oid),
           'options', c.reloptions,
           'columns', (SELECT json_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod) ORDER BY a.attnum)
                       FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped))::text
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('v', 'm') AND {NS} AND {NOT_EXT_CLASS} AND {NOT_TRACKING};

SELECT 'sequence', n.nspname || '.' || c.relname,
       json_build_object(
           'type', format_type(s.seqtypid, NULL), 'start', s.seqstart, 'increment', s.seqincrement,
           'min', s.seqmin, 'max', s.seqmax, 'cache', s.seqcache, 'cycle', s.seqcycle,
           'owned_by', dn.nspname || '.' || dc.relname || '.' || da.attname)::text
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_sequence s ON s.seqrelid = c.oid
LEFT JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = c.oid
     AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
LEFT JOIN pg_class dc ON dc.oid = d.refobjid
LEFT JOIN pg_namespace dn ON dn.oid = dc.relnamespace
LEFT JOIN pg_attribute da ON da.attrelid = d.refobjid AND da.attnum = d.refobjsubid
WHERE c.relkind = 'S' AND {NS} AND {NOT_EXT_CLASS} AND {NOT_TRACKING};

SELECT 'table', n.nspname || '.' || c.relname,
       json_build_object(
           'relkind', c.relkind,
           'persistence', c.relpersistence,
           'row_security', c.relrowsecurity,
           'force_row_security', c.relforcerowsecurity,
           'options', c.reloptions,
           'partition_key', CASE WHEN c.relkind = 'p' THEN pg_get_partkeydef(c.oid) END,
           'partition_bound', pg_get_expr(c.relpartbound, c.oid),
           'inherits', (SELECT json_agg(pn.nspname || '.' || pc.relname ORDER BY i.inhseqno)
                        FROM pg_inherits i
                        JOIN pg_class pc ON pc.oid = i.inhparent
                        JOIN pg_namespace pn ON pn.oid = pc.relnamespace
                        WHERE i.inhrelid = c.oid))::text
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'f') AND {NS} AND {NOT_EXT_CLASS} AND {NOT_TRACKING};

SELECT 'column', n.nspname || '.' || c.relname || '.' || a.attname,
       json_build_object(
           'position', a.attnum,
           'relation', n.nspname || '.' || c.relname,
           'type', format_type(a.atttypid, a.atttypmod),
           'not_null', a.attnotnull,
           'default', CASE WHEN a.attgenerated = '' THEN pg_get_expr(ad.adbin, ad.adrelid) END,
           'identity', CASE WHEN a.attidentity <> '' THEN a.attidentity END,
           'generated', CASE WHEN a.attgenerated <> '' THEN pg_get_expr(ad.adbin, ad.adrelid) END,
           'collation', CASE WHEN a.attcollation <> t.typcollation THEN co.collname END)::text
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
LEFT JOIN pg_collation co ON co.oid = a.attcollation
WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'f')
  AND {NS} AND {NOT_EXT_CLASS} AND {NOT_TRACKING};

SELECT 'constraint', n.nspname || '.' || c.relname || '.' || k.conname,
       json_build_object(
           'type', k.contype,
           'definition', pg_get_constraintdef(k.oid),
           'deferrable', k.condeferrable,
           'deferred', k.condeferred,
           'validated', k.convalidated)::text
FROM pg_constraint k
JOIN pg_class c ON c.oid = k.conrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE {NS} AND {NOT_EXT_CLASS} AND {NOT_TRACKING};

SELECT 'index', n.nspname || '.' || ic.relname,
       json_build_object(
           'table', c.relname,
           'definition', pg_get_indexdef(i.indexrelid),
           'valid', i.indisvalid)::text
FROM pg_index i
JOIN pg_class ic ON ic.oid = i.indexrelid
JOIN pg_class c ON c.oid = i.indrelid
JOIN pg_namespace n ON n.oid = ic.relnamespace
WHERE {NS} AND {NOT_EXT_CLASS} AND {NOT_TRACKING};

SELECT CASE p.prokind WHEN 'p' THEN 'procedure' WHEN 'a' THEN 'aggregate' ELSE 'function' END,
       n.nspname || '.' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')',
       json_build_object(
           'arguments', pg_get_function_arguments(p.oid),
           'result', pg_get_function_result(p.oid),
           'language', l.lanname,
           'body', {body},
           'volatility', p.provolatile,
           'strict', p.proisstrict,
           'security_definer', p.prosecdef,
           'leakproof', p.proleakproof,
           'parallel', p.proparallel,
           'window', p.prokind = 'w',
           'config', p.proconfig,
           'cost', p.procost,
           'rows', p.prorows)::text
FROM pg_proc p
JOIN pg_namespace n ON n.oid = p.pronamespace
JOIN pg_language l ON l.oid = p.prolang
WHERE {NS} AND p.oid NOT IN (SELECT d.objid FROM pg_depend d
                             WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
                               AND d.classid = 'pg_proc'::regclass);

SELECT 'trigger', n.nspname || '.' || c.relname || '.' || t.tgname,
       json_build_object('definition', pg_get_triggerdef(t.oid), 'enabled', t.tgenabled)::text
FROM pg_trigger t
JOIN pg_class c ON c.oid = t.tgrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE NOT t.tgisinternal AND {NS} AND {NOT_EXT_CLASS} AND {NOT_TRACKING};

SELECT 'type', n.nspname || '.' || t.typname,
       json_build_object(
           'kind', t.typtype,
           'labels', CASE WHEN t.typtype = 'e' THEN
               (SELECT json_agg(e.enumlabel ORDER BY e.enumsortorder) FROM pg_enum e WHERE e.enumtypid = t.oid) END,
           'attributes', CASE WHEN t.typtype = 'c' THEN
               (SELECT json_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod) ORDER BY a.attnum)
                FROM pg_attribute a WHERE a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped) END,
           'base', CASE WHEN t.typtype = 'd' THEN format_type(t.typbasetype, t.typtypmod) END,
           'not_null', t.typnotnull,
           'default', t.typdefault,
           'constraints', CASE WHEN t.typtype = 'd' THEN
               (SELECT json_agg(k.conname || ' ' || pg_get_constraintdef(k.oid) ORDER BY k.conname)
                FROM pg_constraint k WHERE k.contypid = t.oid) END,
           'subtype', CASE WHEN t.typtype = 'r' THEN
               (SELECT format_type(r.rngsubtype, NULL) FROM pg_range r WHERE r.rngtypid = t.oid) END)::text
FROM pg_type t
JOIN pg_namespace n ON n.oid = t.typnamespace
WHERE t.typtype IN ('e', 'c', 'd', 'r')
  AND (t.typtype <> 'c' OR (SELECT c.relkind FROM pg_class c WHERE c.oid = t.typrelid) = 'c')
  AND {NS} AND t.oid NOT IN (SELECT d.objid FROM pg_depend d
                             WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
                               AND d.classid = 'pg_type'::regclass);

SELECT 'policy', n.nspname || '.' || c.relname || '.' || p.polname,
       json_build_object(
           'command', p.polcmd,
           'permissive', p.polpermissive,
           'roles', (SELECT json_agg(x ORDER BY x) FROM (
                        SELECT CASE WHEN r = 0 THEN 'public' ELSE pg_get_userbyid(r)::text END AS x
                        FROM unnest(p.polroles) AS u(r)) s),
           'using', pg_get_expr(p.polqual, p.polrelid),
           'check', pg_get_expr(p.polwithcheck, p.polrelid))::text
FROM pg_policy p
JOIN pg_class c ON c.oid = p.polrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE {NS} AND {NOT_EXT_CLASS} AND {NOT_TRACKING};
"#
    )
    .split(";\n\n")
    .map(|q| q.trim().trim_end_matches(';').trim())
    .filter(|q| !q.is_empty())
    .map(|q| format!("SELECT q.k::text, q.n::text, q.p::text FROM ({q}) AS q(k, n, p)"))
    .collect()
}

/// The catalog queries, prepared once per connection: they take no
/// parameters, so the server plans them once and reuses the plan for every
/// later snapshot on that connection.
#[derive(Debug)]
pub(crate) struct Catalog {
    statements: Vec<postgres::Statement>,
}

impl Catalog {
    pub(crate) fn prepare(client: &mut Client) -> Result<Self, MigrateError> {
        let version: i32 = client
            .query_one("SELECT current_setting('server_version_num')::int", &[])
            .map_err(|e| MigrateError::database("reading the server version", e))?
            .get(0);
        // One statement, one round trip per snapshot.
        let statements = vec![
            client
                .prepare(&queries(version).join("\nUNION ALL\n"))
                .map_err(|e| MigrateError::database("preparing the catalog queries", e))?,
        ];
        Ok(Catalog { statements })
    }

    /// Reads the schema of the database `client` (the one that prepared
    /// the statements) is connected to.
    pub(crate) fn capture(&self, client: &mut Client) -> Result<SchemaSnapshot, MigrateError> {
        let mut snapshot = SchemaSnapshot::default();
        for statement in &self.statements {
            let rows = client
                .query(statement, &[])
                .map_err(|e| MigrateError::database("reading the schema from the catalogs", e))?;
            for row in rows {
                let kind: Option<String> = row.get(0);
                let name: Option<String> = row.get(1);
                let props: Option<String> = row.get(2);
                let (Some(kind), Some(name)) = (kind, name) else {
                    continue;
                };
                let props = parse_props(&kind, &name, props.as_deref())?;
                snapshot
                    .objects
                    .entry(kind)
                    .or_default()
                    .insert(name, props);
            }
        }
        snapshot.order_columns();
        Ok(snapshot)
    }
}

fn parse_props(
    kind: &str,
    name: &str,
    text: Option<&str>,
) -> Result<Map<String, Value>, MigrateError> {
    let Some(text) = text else {
        return Ok(Map::new());
    };
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(Value::Null) => Ok(Map::new()),
        Ok(other) => Err(MigrateError::Snapshot {
            object: format!("{kind} {name}"),
            reason: format!("expected an object, got {other}"),
        }),
        Err(e) => Err(MigrateError::Snapshot {
            object: format!("{kind} {name}"),
            reason: e.to_string(),
        }),
    }
}

/// The user-visible schema of a database, read from the catalogs: schemas,
/// extensions, tables (kind, persistence, row security, partitioning,
/// inheritance, column order), columns (type, nullability, default,
/// identity, generated expression, collation), primary-key, unique,
/// foreign-key, check and exclusion constraints, indexes (definition),
/// sequences, views and materialized views, functions, procedures and
/// aggregates, triggers, enum / composite / domain / range types and row
/// security policies.
///
/// The migration tracking tables are left out. Objects are keyed by kind
/// and qualified name (`public.users.email` for a column,
/// `public.f(integer)` for a function); owners, privileges, comments and
/// data are not compared.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SchemaSnapshot {
    /// kind -> qualified name -> properties.
    objects: BTreeMap<String, BTreeMap<String, Map<String, Value>>>,
}

impl SchemaSnapshot {
    /// Reads the schema of the database `client` is connected to (inside
    /// the client's current transaction, if one is open).
    pub fn capture(client: &mut Client) -> Result<Self, MigrateError> {
        Catalog::prepare(client)?.capture(client)
    }

    /// Moves each column's position into its table's `columns` list (the
    /// column order), so that a column's own properties do not change when
    /// another column moves.
    fn order_columns(&mut self) {
        let mut order: BTreeMap<String, Vec<(i64, String)>> = BTreeMap::new();
        if let Some(columns) = self.objects.get_mut("column") {
            for (name, props) in columns.iter_mut() {
                let position = props
                    .remove("position")
                    .and_then(|p| p.as_i64())
                    .unwrap_or(0);
                let Some(Value::String(table)) = props.remove("relation") else {
                    continue;
                };
                let column = name
                    .strip_prefix(table.as_str())
                    .and_then(|rest| rest.strip_prefix('.'))
                    .unwrap_or(name)
                    .to_owned();
                order.entry(table).or_default().push((position, column));
            }
        }
        if let Some(tables) = self.objects.get_mut("table") {
            for (name, props) in tables.iter_mut() {
                let mut columns = order.remove(name).unwrap_or_default();
                columns.sort();
                let columns = columns.into_iter().map(|(_, c)| Value::String(c)).collect();
                props.insert("columns".to_owned(), Value::Array(columns));
            }
        }
    }

    /// The kinds present (`table`, `column`, `index`, ...).
    pub fn kinds(&self) -> impl Iterator<Item = &str> {
        self.objects.keys().map(String::as_str)
    }

    /// The objects of one kind: qualified name -> properties.
    pub fn objects(&self, kind: &str) -> Option<&BTreeMap<String, Map<String, Value>>> {
        self.objects.get(kind)
    }

    /// One object's properties.
    pub fn get(&self, kind: &str, name: &str) -> Option<&Map<String, Value>> {
        self.objects.get(kind)?.get(name)
    }

    pub(crate) fn all(&self) -> &BTreeMap<String, BTreeMap<String, Map<String, Value>>> {
        &self.objects
    }
}
