//! Content fingerprints of a database: every user table's row count and checksum, so a
//! restore is checked by content, not by "the server started".

use std::collections::BTreeMap;

use tokio_postgres::NoTls;

/// Row count and checksum of one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TablePrint {
    /// Rows in the table.
    pub rows: i64,
    /// md5 of every row's text form, in sorted order.
    pub md5: String,
}

/// Every local user table (`schema.table`) of a database with its fingerprint.
pub type Fingerprint = BTreeMap<String, TablePrint>;

/// Fingerprints every ordinary local table of the database `conninfo` points at
/// (foreign and partitioned parents are skipped: their rows live on the shards).
pub async fn fingerprint(conninfo: &str) -> Result<Fingerprint, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(conninfo, NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let tables = client
        .query(
            "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
               AND n.nspname NOT LIKE 'pg\\_%' ORDER BY 1",
            &[],
        )
        .await?;
    let mut out = Fingerprint::new();
    for row in tables {
        let table: String = row.get(0);
        let r = client
            .query_one(
                &format!(
                    "SELECT count(*), coalesce(md5(string_agg(t::text, E'\\n' ORDER BY t::text)), '') FROM {table} t"
                ),
                &[],
            )
            .await?;
        out.insert(
            table,
            TablePrint {
                rows: r.get(0),
                md5: r.get(1),
            },
        );
    }
    Ok(out)
}

/// Fingerprints the primary of every member of a local cluster, coordinator first.
pub async fn members(
    observed: &crate::runtime::cluster::ClusterObserved,
) -> Result<Vec<Fingerprint>, tokio_postgres::Error> {
    let mut out = Vec::new();
    for i in 0..observed.members.len() {
        let conninfo = observed
            .primary_conninfo(i)
            .expect("an observed member has a primary");
        out.push(fingerprint(&conninfo).await?);
    }
    Ok(out)
}

/// Describes how `got` differs from `want` (empty when equal).
pub fn differences(want: &Fingerprint, got: &Fingerprint) -> Vec<String> {
    let mut out = Vec::new();
    for (t, w) in want {
        match got.get(t) {
            None => out.push(format!("table {t} is missing")),
            Some(g) if g != w => out.push(format!(
                "table {t}: {} rows (md5 {}) instead of {} rows (md5 {})",
                g.rows, g.md5, w.rows, w.md5
            )),
            Some(_) => {}
        }
    }
    for t in got.keys().filter(|t| !want.contains_key(*t)) {
        out.push(format!("table {t} should not exist"));
    }
    out
}
