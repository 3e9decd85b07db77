//! Sharding wiring on the coordinator: `ddp` (postgres_fdw + dblink, a SQL function that
//! makes hash-distributed tables) and `citus` (the extension plus its node list).

use super::error::RuntimeError;
use super::instance::{Instance, SUPERUSER};

/// Creates `ddp_create_distributed_table(table_name, columns, distribution_column)` on the
/// coordinator.
///
/// It creates the table `columns` describes (e.g. `id bigint primary key, v text`) on every
/// shard (through dblink over the `shard<i>` foreign servers), then on the coordinator a table
/// of the same columns (constraints stay on the shards, NOT NULL and defaults are kept)
/// partitioned by hash of `distribution_column`, whose partition `<table>_shard<i>` with
/// remainder i is a postgres_fdw foreign table on shard i. Rows written through the
/// coordinator land on the shards; reads on the coordinator see all shards. Returns the
/// number of shards. Defaults are evaluated on the coordinator, so serial columns are not
/// supported: give keys explicitly.
const DDP_FUNCTION: &str = r#"
CREATE OR REPLACE FUNCTION public.ddp_create_distributed_table(
    table_name text, columns text, distribution_column text)
RETURNS integer LANGUAGE plpgsql AS $fn$
DECLARE
    shard record;
    shards text[];
    n integer;
    template text := 'ddp_template_' || md5(table_name);
BEGIN
    SELECT array_agg(srvname::text ORDER BY substr(srvname, 6)::int) INTO shards
    FROM pg_foreign_server WHERE srvname ~ '^shard[0-9]+$';
    n := coalesce(array_length(shards, 1), 0);
    IF n = 0 THEN
        RAISE EXCEPTION 'no shard servers on this coordinator: let the shardvault runtime wire the cluster first';
    END IF;
    IF to_regclass(quote_ident(table_name)) IS NOT NULL THEN
        RAISE EXCEPTION 'table % already exists on the coordinator', table_name;
    END IF;
    FOR i IN 1..n LOOP
        PERFORM dblink_exec(shards[i], format('CREATE TABLE IF NOT EXISTS %I (%s)', table_name, columns));
    END LOOP;
    EXECUTE format('CREATE TEMP TABLE %I (%s)', template, columns);
    EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS) PARTITION BY HASH (%I)',
                   table_name, template, distribution_column);
    EXECUTE format('DROP TABLE %I', template);
    FOR i IN 1..n LOOP
        EXECUTE format('CREATE FOREIGN TABLE %I PARTITION OF %I FOR VALUES WITH (MODULUS %s, REMAINDER %s) '
                       'SERVER %I OPTIONS (schema_name %L, table_name %L)',
                       table_name || '_' || shards[i], table_name, n, i - 1, shards[i], 'public', table_name);
    END LOOP;
    RETURN n;
END
$fn$;
COMMENT ON FUNCTION public.ddp_create_distributed_table(text, text, text) IS
    'Creates a hash-distributed table: the real table on every shard, a partitioned table of foreign tables here. Example: SELECT ddp_create_distributed_table(''accounts'', ''id bigint primary key, balance bigint not null'', ''id'')';
"#;

/// Wires `ddp` on the coordinator's `database`: extensions, one foreign server `shard<i>` per
/// shard primary (created, or repointed when it names another socket, port or database),
/// user mappings and the distribution function. Returns what changed.
pub async fn wire_ddp(
    coordinator: &Instance,
    shards: &[&Instance],
    database: &str,
) -> Result<Vec<String>, RuntimeError> {
    let client = coordinator.connect(database).await?;
    let sql = |what: &str| {
        let instance = coordinator.name.clone();
        let what = what.to_string();
        move |source| RuntimeError::Sql {
            instance,
            what,
            cause: source,
        }
    };
    let mut actions = Vec::new();
    for extension in ["postgres_fdw", "dblink"] {
        if ensure_extension(&client, extension)
            .await
            .map_err(sql(&format!("creating extension {extension}")))?
        {
            actions.push(format!(
                "created extension {extension} on {}",
                coordinator.name
            ));
        }
    }
    for (i, shard) in shards.iter().enumerate() {
        let server = format!("shard{i}");
        let wanted = [
            ("host", shard.socket_dir.to_string_lossy().into_owned()),
            ("port", shard.port.to_string()),
            ("dbname", database.to_string()),
        ];
        let existing = client
            .query_opt(
                "SELECT coalesce(srvoptions, '{}') FROM pg_foreign_server WHERE srvname = $1",
                &[&server],
            )
            .await
            .map_err(sql(&format!("reading foreign server {server}")))?;
        let options: Vec<String> = wanted
            .iter()
            .map(|(k, v)| format!("{k} {}", literal(v)))
            .collect();
        match existing {
            None => {
                client
                    .batch_execute(&format!(
                        "CREATE SERVER {server} FOREIGN DATA WRAPPER postgres_fdw OPTIONS ({})",
                        options.join(", ")
                    ))
                    .await
                    .map_err(sql(&format!("creating foreign server {server}")))?;
                actions.push(format!(
                    "created foreign server {server} for {} (port {})",
                    shard.name, shard.port
                ));
            }
            Some(row) => {
                let current: Vec<String> = row.get(0);
                let changes: Vec<String> = wanted
                    .iter()
                    .filter(|(k, v)| !current.contains(&format!("{k}={v}")))
                    .map(|(k, v)| {
                        let verb = if current.iter().any(|o| o.starts_with(&format!("{k}="))) {
                            "SET"
                        } else {
                            "ADD"
                        };
                        format!("{verb} {k} {}", literal(v))
                    })
                    .collect();
                if !changes.is_empty() {
                    client
                        .batch_execute(&format!(
                            "ALTER SERVER {server} OPTIONS ({})",
                            changes.join(", ")
                        ))
                        .await
                        .map_err(sql(&format!("repointing foreign server {server}")))?;
                    actions.push(format!(
                        "repointed foreign server {server} to {} (port {})",
                        shard.name, shard.port
                    ));
                }
            }
        }
        let mapped = client
            .query_opt(
                "SELECT 1 FROM pg_user_mappings WHERE srvname = $1 AND usename = $2",
                &[&server, &SUPERUSER],
            )
            .await
            .map_err(sql(&format!("reading the user mapping for {server}")))?
            .is_some();
        if !mapped {
            client
                .batch_execute(&format!(
                    "CREATE USER MAPPING IF NOT EXISTS FOR {SUPERUSER} SERVER {server} OPTIONS (user '{SUPERUSER}')"
                ))
                .await
                .map_err(sql(&format!("creating the user mapping for {server}")))?;
        }
    }
    let body = DDP_FUNCTION
        .split("$fn$")
        .nth(1)
        .expect("the function has a body");
    let current = client
        .query_opt(
            "SELECT prosrc FROM pg_proc WHERE proname = 'ddp_create_distributed_table' \
             AND pronamespace = 'public'::regnamespace",
            &[],
        )
        .await
        .map_err(sql("reading ddp_create_distributed_table"))?
        .map(|r| r.get::<_, String>(0));
    if current.as_deref() != Some(body) {
        client
            .batch_execute(DDP_FUNCTION)
            .await
            .map_err(sql("creating ddp_create_distributed_table"))?;
    }
    Ok(actions)
}

/// Creates `extension` unless it exists; true when it was created.
async fn ensure_extension(
    client: &tokio_postgres::Client,
    extension: &str,
) -> Result<bool, tokio_postgres::Error> {
    let exists = client
        .query_opt(
            "SELECT 1 FROM pg_extension WHERE extname = $1",
            &[&extension],
        )
        .await?
        .is_some();
    if !exists {
        client
            .batch_execute(&format!(
                "CREATE EXTENSION IF NOT EXISTS {}",
                ident(extension)
            ))
            .await?;
    }
    Ok(!exists)
}

/// Wires `citus`: the extension on every member's `database`, the coordinator's own address
/// and every shard primary as a worker node (updated when its port changed). It reads
/// first and writes only what differs: each write is a distributed transaction.
pub async fn wire_citus(
    coordinator: &Instance,
    shards: &[&Instance],
    database: &str,
) -> Result<Vec<String>, RuntimeError> {
    let mut actions = Vec::new();
    for member in std::iter::once(coordinator).chain(shards.iter().copied()) {
        let created = ensure_extension(&member.connect(database).await?, "citus")
            .await
            .map_err(|source| RuntimeError::Sql {
                instance: member.name.clone(),
                what: "creating extension citus".to_string(),
                cause: source,
            })?;
        if created {
            actions.push(format!("created extension citus on {}", member.name));
        }
    }
    let client = coordinator.connect(database).await?;
    let sql = |what: String| {
        let instance = coordinator.name.clone();
        move |source| RuntimeError::Sql {
            instance,
            what,
            cause: source,
        }
    };
    let host = |i: &Instance| i.socket_dir.to_string_lossy().into_owned();
    let coordinator_row = client
        .query_opt(
            "SELECT nodename, nodeport FROM pg_dist_node WHERE groupid = 0",
            &[],
        )
        .await
        .map_err(sql("reading the coordinator in pg_dist_node".to_string()))?
        .map(|r| (r.get::<_, String>(0), r.get::<_, i32>(1)));
    let wanted = (host(coordinator), i32::from(coordinator.port));
    if coordinator_row.as_ref() != Some(&wanted) {
        client
            .execute(
                "SELECT citus_set_coordinator_host($1, $2)",
                &[&wanted.0, &wanted.1],
            )
            .await
            .map_err(sql("setting the citus coordinator host".to_string()))?;
        actions.push(format!(
            "set the citus coordinator host to {}",
            coordinator.name
        ));
    }
    let nodes = client
        .query(
            "SELECT nodeid, nodeport, nodename FROM pg_dist_node WHERE groupid <> 0 ORDER BY nodeid",
            &[],
        )
        .await
        .map_err(sql("reading pg_dist_node".to_string()))?;
    for (i, shard) in shards.iter().enumerate() {
        let port = i32::from(shard.port);
        match nodes.get(i) {
            Some(node)
                if node.get::<_, i32>(1) == port && node.get::<_, String>(2) == host(shard) => {}
            Some(node) => {
                let id: i32 = node.get(0);
                client
                    .execute(
                        "SELECT citus_update_node($1, $2, $3)",
                        &[&id, &host(shard), &port],
                    )
                    .await
                    .map_err(sql(format!("repointing citus node {id}")))?;
                actions.push(format!("repointed citus worker {id} to {}", shard.name));
            }
            None => {
                client
                    .execute("SELECT citus_add_node($1, $2)", &[&host(shard), &port])
                    .await
                    .map_err(sql(format!("adding citus worker {}", shard.name)))?;
                actions.push(format!("added citus worker {}", shard.name));
            }
        }
    }
    Ok(actions)
}

/// A SQL string literal.
fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// A SQL identifier, quoted.
pub(crate) fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
