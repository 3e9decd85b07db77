//! `shardvault get`: list and show resources as tables, YAML, JSON or names.

use std::process::ExitCode;

use anyhow::bail;
use serde_json::{Value, json};
use shardvault_api::Kind;

use super::client::{ConnArgs, runtime};
use super::progress_view::{self, View};
use super::stdout::{out, outln};

/// Output formats of `get`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Full objects as YAML.
    Yaml,
    /// Full objects as JSON.
    Json,
    /// The table with more columns.
    Wide,
    /// `kind.group/name` only.
    Name,
}

/// Options of `shardvault get`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// KIND [NAME...], KIND1,KIND2, or KIND/NAME... (plural, singular, short name or Kind).
    #[arg(required = true)]
    resources: Vec<String>,
    /// Output format.
    #[arg(short = 'o', long, value_enum)]
    output: Option<Output>,
    /// Label selector (`app=web`, `tier in (a,b)`, `!legacy`).
    #[arg(short = 'l', long)]
    selector: Option<String>,
    /// Namespace.
    #[arg(short = 'n', long, default_value = shardvault_store::DEFAULT_NAMESPACE)]
    namespace: String,
    /// All namespaces.
    #[arg(short = 'A', long)]
    all_namespaces: bool,
    /// After listing, print a row for every change until interrupted (one kind).
    #[arg(short = 'w', long)]
    watch: bool,
    #[command(flatten)]
    conn: ConnArgs,
}

/// Resolves a kind name as the CLI accepts it, or says which names exist.
pub fn parse_kind(name: &str) -> anyhow::Result<Kind> {
    Kind::from_cli_name(name).ok_or_else(|| {
        let known: Vec<String> = Kind::ALL
            .iter()
            .map(|k| match k.short_name() {
                Some(s) => format!("{} ({s})", k.plural()),
                None => k.plural().to_string(),
            })
            .collect();
        anyhow::anyhow!(
            "unknown resource type {name:?}: shardvault knows {}",
            known.join(", ")
        )
    })
}

/// Reads `KIND [NAME...]`, `KIND1,KIND2` and `KIND/NAME...` forms into (kind, name) pairs
/// (`None` name = all of that kind).
pub fn parse_targets(args: &[String]) -> anyhow::Result<Vec<(Kind, Option<String>)>> {
    if args.iter().all(|a| a.contains('/')) {
        return args
            .iter()
            .map(|a| {
                let (k, n) = a.split_once('/').unwrap_or((a, ""));
                if n.is_empty() {
                    bail!("{a:?}: expected KIND/NAME");
                }
                Ok((parse_kind(k)?, Some(n.to_string())))
            })
            .collect();
    }
    let kinds = args[0]
        .split(',')
        .map(parse_kind)
        .collect::<anyhow::Result<Vec<_>>>()?;
    if args.len() == 1 {
        return Ok(kinds.into_iter().map(|k| (k, None)).collect());
    }
    if kinds.len() > 1 {
        bail!("names cannot be given with several kinds: use KIND/NAME forms instead");
    }
    if let Some(bad) = args[1..].iter().find(|a| a.contains('/')) {
        bail!("{bad:?}: mix of KIND NAME and KIND/NAME forms; use one of them");
    }
    Ok(args[1..]
        .iter()
        .map(|n| (kinds[0], Some(n.clone())))
        .collect())
}

/// Hides Secret values (and the applied copy of them) in an object shown among others.
pub fn redact(obj: &Value) -> Value {
    let mut o = obj.clone();
    if o["kind"] != "Secret" {
        return o;
    }
    if let Some(data) = o.get_mut("data").and_then(Value::as_object_mut) {
        for v in data.values_mut() {
            *v = json!("(redacted)");
        }
    }
    if let Some(a) = o
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
    {
        a.remove(shardvault_store::LAST_APPLIED);
    }
    o
}

/// Human age of an RFC 3339 time, as kubectl prints it (`45s`, `5m30s`, `3h`, `2d4h`).
pub fn age(ts: Option<&str>) -> String {
    let Some(t) = ts.and_then(|t| t.parse::<jiff::Timestamp>().ok()) else {
        return "<unknown>".into();
    };
    human_duration((jiff::Timestamp::now().as_second() - t.as_second()).max(0))
}

/// A duration in seconds as kubectl prints it.
pub fn human_duration(s: i64) -> String {
    let (m, h, d) = (s / 60, s / 3600, s / 86400);
    match () {
        _ if s < 120 => format!("{s}s"),
        _ if m < 10 => format!("{m}m{}s", s % 60),
        _ if h < 3 => format!("{m}m"),
        _ if h < 8 => format!("{h}h{}m", m % 60),
        _ if h < 48 => format!("{h}h"),
        _ if d < 8 => format!("{d}d{}h", h % 24),
        _ => format!("{d}d"),
    }
}

pub use shardvault_api::quantity::human_bytes;

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

fn or_dash(text: &str) -> String {
    if text.is_empty() {
        "-".into()
    } else {
        text.to_string()
    }
}

fn size_at(v: &Value, ptr: &str) -> String {
    v.pointer(ptr)
        .and_then(Value::as_u64)
        .map_or("-".into(), human_bytes)
}

fn timing_duration(v: &Value) -> String {
    let parse = |p: &str| s(v, p).parse::<jiff::Timestamp>().ok();
    match (
        parse("/status/process/timing/start"),
        parse("/status/process/timing/end"),
    ) {
        (Some(a), Some(b)) => human_duration(b.as_second() - a.as_second()),
        _ => "-".into(),
    }
}

/// Column names of the table for a kind.
fn headers(kind: Kind, wide: bool) -> Vec<&'static str> {
    let mut h = match kind {
        Kind::SGShardedBackup => vec![
            "NAME",
            "CLUSTER",
            "STATUS",
            "PROGRESS",
            "TYPE",
            "START",
            "DURATION",
            "COMPRESSED",
            "UNCOMPRESSED",
            "AGE",
        ],
        Kind::SGBackup => vec![
            "NAME",
            "CLUSTER",
            "STATUS",
            "PROGRESS",
            "TYPE",
            "START",
            "COMPRESSED",
            "AGE",
        ],
        Kind::SGShardedCluster => vec!["NAME", "TYPE", "MEMBERS", "READY", "AGE"],
        Kind::SGObjectStorage => vec!["NAME", "TYPE", "BUCKET/PATH", "AGE"],
        Kind::Secret => vec!["NAME", "KEYS", "AGE"],
        Kind::Event => vec!["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"],
    };
    if wide {
        h.extend(match kind {
            Kind::SGShardedBackup => vec![
                "MANAGED",
                "MEMBERS",
                "POSTGRES",
                "RESTORE POINT",
                "PARENT",
                "RESTORE READS",
            ],
            Kind::SGBackup => vec![
                "UNCOMPRESSED",
                "LSN START",
                "LSN END",
                "TIMELINE",
                "PARENT",
                "RESTORE READS",
            ],
            Kind::SGShardedCluster => vec![
                "VERSION",
                "DATABASE",
                "COORDINATORS",
                "SHARDS",
                "INSTANCES/SHARD",
                "BACKUPS",
                "NEXT BACKUP",
            ],
            Kind::SGObjectStorage => vec!["ENCRYPTION"],
            Kind::Secret => vec!["TYPE"],
            Kind::Event => vec!["COUNT"],
        });
    }
    h
}

/// Running servers over all servers the spec asks for (coordinator instances plus every
/// shard's instances), from the cluster controller's status.
fn ready_servers(v: &Value) -> String {
    let count = |path: &str| v.pointer(path).and_then(Value::as_i64).unwrap_or(1).max(1);
    let servers = count("/spec/coordinator/instances")
        + v.pointer("/spec/shards/clusters")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            * count("/spec/shards/instancesPerCluster");
    let running = v
        .pointer("/status/members")
        .and_then(Value::as_array)
        .map_or(0, |ms| {
            ms.iter()
                .filter_map(|m| m["instances"].as_array())
                .flatten()
                .filter(|i| {
                    i["state"]
                        .as_str()
                        .is_some_and(|s| s.eq_ignore_ascii_case("running"))
                })
                .count()
        });
    format!("{running}/{servers}")
}

/// The next scheduled backup of a cluster over all its entries (`backups[i]` and UTC time).
fn next_backup(v: &Value) -> String {
    use shardvault_control::schedule::{SCHEDULE_ANNOTATION, recorded};
    recorded(v["metadata"]["annotations"][SCHEDULE_ANNOTATION].as_str())
        .iter()
        .min_by_key(|e| e.next_schedule_time)
        .map_or("-".into(), |e| {
            format!("backups[{}] {}", e.entry, e.next_schedule_time)
        })
}

/// One table row for an object.
fn row(kind: Kind, v: &Value, wide: bool) -> Vec<String> {
    let name = s(v, "/metadata/name").to_string();
    let created = age(v
        .pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str));
    let status = || or_dash(s(v, "/status/process/status"));
    let start = || or_dash(s(v, "/status/process/timing/start"));
    let backup_type = || or_dash(s(v, "/status/backupInformation/backupType"));
    let parent = || or_dash(s(v, "/status/backupInformation/parent"));
    let restore_reads = || size_at(v, "/status/backupInformation/size/restore");
    let progress = || progress_view::of(kind, v).map_or("-".into(), |p| p.text());
    let mut r = match kind {
        Kind::SGShardedBackup => vec![
            name,
            s(v, "/spec/sgShardedCluster").into(),
            status(),
            progress(),
            backup_type(),
            start(),
            timing_duration(v),
            size_at(v, "/status/backupInformation/size/compressed"),
            size_at(v, "/status/backupInformation/size/uncompressed"),
            created,
        ],
        Kind::SGBackup => vec![
            name,
            s(v, "/spec/sgCluster").into(),
            status(),
            progress(),
            backup_type(),
            start(),
            size_at(v, "/status/backupInformation/size/compressed"),
            created,
        ],
        Kind::SGShardedCluster => vec![
            name,
            or_dash(s(v, "/spec/type")),
            (1 + v
                .pointer("/spec/shards/clusters")
                .and_then(Value::as_i64)
                .unwrap_or(0))
            .to_string(),
            ready_servers(v),
            created,
        ],
        Kind::SGObjectStorage => {
            let ty = s(v, "/spec/type");
            let where_ = match ty {
                "filesystem" => s(v, "/spec/filesystem/path").to_string(),
                other => s(v, &format!("/spec/{other}/bucket")).to_string(),
            };
            vec![name, ty.to_string(), or_dash(&where_), created]
        }
        Kind::Secret => {
            let keys: Vec<&str> = v["data"]
                .as_object()
                .map(|m| m.keys().map(String::as_str).collect())
                .unwrap_or_default();
            vec![name, or_dash(&keys.join(",")), created]
        }
        Kind::Event => vec![
            age(v.get("lastTimestamp").and_then(Value::as_str)),
            s(v, "/type").into(),
            s(v, "/reason").into(),
            format!(
                "{}/{}",
                s(v, "/involvedObject/kind").to_ascii_lowercase(),
                s(v, "/involvedObject/name")
            ),
            s(v, "/message").into(),
        ],
    };
    if wide {
        r.extend(match kind {
            Kind::SGShardedBackup => vec![
                v.pointer("/spec/managedLifecycle")
                    .and_then(Value::as_bool)
                    .unwrap_or(false)
                    .to_string(),
                v.pointer("/status/sgBackups")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len)
                    .to_string(),
                or_dash(s(v, "/status/backupInformation/postgresVersion")),
                or_dash(s(v, "/status/restorePoint/name")),
                parent(),
                restore_reads(),
            ],
            Kind::SGBackup => vec![
                size_at(v, "/status/backupInformation/size/uncompressed"),
                or_dash(s(v, "/status/backupInformation/lsn/start")),
                or_dash(s(v, "/status/backupInformation/lsn/end")),
                v.pointer("/status/backupInformation/timeline")
                    .map_or("-".into(), Value::to_string),
                parent(),
                restore_reads(),
            ],
            Kind::SGShardedCluster => vec![
                or_dash(s(v, "/spec/postgres/version")),
                or_dash(s(v, "/spec/database")),
                v.pointer("/spec/coordinator/instances")
                    .map_or("-".into(), Value::to_string),
                v.pointer("/spec/shards/clusters")
                    .map_or("-".into(), Value::to_string),
                v.pointer("/spec/shards/instancesPerCluster")
                    .map_or("-".into(), Value::to_string),
                v.pointer("/spec/configurations/backups")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len)
                    .to_string(),
                next_backup(v),
            ],
            Kind::SGObjectStorage => vec![or_dash(s(v, "/spec/encryption/method"))],
            Kind::Secret => vec![or_dash(s(v, "/type"))],
            Kind::Event => vec![v["count"].to_string()],
        });
    }
    r
}

/// Lays out rows in left-aligned columns separated by three spaces, as kubectl does.
pub fn format_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let head: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    for r in std::iter::once(&head).chain(rows) {
        let cells: Vec<String> = r
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (c, w))| {
                if i + 1 == r.len() {
                    c.clone()
                } else {
                    format!("{c:<w$}")
                }
            })
            .collect();
        out.push_str(cells.join("   ").trim_end());
        out.push('\n');
    }
    out
}

/// The table of objects of one kind (`namespaced` adds a NAMESPACE column).
pub fn table(kind: Kind, items: &[Value], wide: bool, namespaced: bool, qualify: bool) -> String {
    let mut h = headers(kind, wide);
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|v| {
            let mut r = row(kind, v, wide);
            if qualify && kind != Kind::Event {
                r[0] = format!("{}/{}", kind.qualified(), r[0]);
            }
            if namespaced {
                r.insert(0, shardvault_store::namespace_of(v).to_string());
            }
            r
        })
        .collect();
    if namespaced {
        h.insert(0, "NAMESPACE");
    }
    format_table(&h, &rows)
}

/// Serializes objects as YAML or JSON: one object alone, several as a `List`.
pub fn serialize(items: &[Value], single: bool, yaml: bool) -> anyhow::Result<String> {
    let v = if single && items.len() == 1 {
        items[0].clone()
    } else {
        json!({"apiVersion": "v1", "kind": "List", "items": items})
    };
    Ok(if yaml {
        yaml_serde::to_string(&v)?
    } else {
        format!("{}\n", serde_json::to_string_pretty(&v)?)
    })
}

/// Prints the current objects of one kind as a table, then a row per change until the
/// daemon ends the watch or nobody reads the rows any more.
async fn watch(args: &Args, kind: Kind, ns: Option<&str>) -> anyhow::Result<ExitCode> {
    let client = args.conn.connect().await?;
    let mut stream = client.watch(kind, ns, args.selector.as_deref()).await?;
    let wide = args.output == Some(Output::Wide);
    let mut first = true;
    let mut view = View::new();
    while let Some((event, obj)) = stream.next().await? {
        if event == "ERROR" {
            bail!(
                "the watch ended: {}",
                obj["message"].as_str().unwrap_or("unknown error")
            );
        }
        let text = table(kind, &[redact(&obj)], wide, args.all_namespaces, false);
        let shown = if first {
            text.as_str()
        } else {
            text.split_once('\n').map_or("", |(_, rows)| rows)
        };
        view.print(|| out!("{shown}"));
        if super::stdout::closed() {
            break;
        }
        let running = (event != "DELETED")
            .then(|| progress_view::of(kind, &obj))
            .flatten();
        view.show(s(&obj, "/metadata/name"), running);
        first = false;
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `get`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    use super::restore_points::{self as rp, Format};
    if rp::NAMES.contains(&args.resources[0].as_str()) {
        let format = match args.output {
            Some(Output::Json) => Format::Json,
            Some(Output::Yaml) => Format::Yaml,
            _ => Format::Table,
        };
        return rp::run(&args.resources[1..], &args.namespace, format, &args.conn);
    }
    let targets = parse_targets(&args.resources)?;
    let ns = (!args.all_namespaces).then_some(args.namespace.as_str());
    if args.watch {
        if !matches!(targets.as_slice(), [(_, None)])
            || matches!(
                args.output,
                Some(Output::Yaml | Output::Json | Output::Name)
            )
        {
            bail!("--watch takes one kind without names, as a table (-o wide at most)");
        }
        let kind = targets[0].0;
        return runtime()?.block_on(watch(&args, kind, ns));
    }
    runtime()?.block_on(async {
        let client = args.conn.connect().await?;
        let mut groups: Vec<(Kind, Vec<Value>)> = Vec::new();
        let mut missing = Vec::new();
        for (kind, name) in &targets {
            let found = match name {
                Some(n) => match client.get(*kind, &args.namespace, n).await? {
                    Some(o) => vec![o],
                    None => {
                        missing.push(format!(
                            "{} {n:?} not found in namespace {}",
                            kind.qualified(),
                            args.namespace
                        ));
                        continue;
                    }
                },
                None => client.list(*kind, ns, args.selector.as_deref()).await?,
            };
            match groups.iter_mut().find(|(k, _)| k == kind) {
                Some((_, items)) => items.extend(found),
                None => groups.push((*kind, found)),
            }
        }
        let named_one_secret =
            targets.len() == 1 && targets[0].0 == Kind::Secret && targets[0].1.is_some();
        let all: Vec<Value> = groups
            .iter()
            .flat_map(|(_, items)| items.iter())
            .map(|o| {
                if named_one_secret {
                    o.clone()
                } else {
                    redact(o)
                }
            })
            .collect();
        let single = targets.len() == 1 && targets[0].1.is_some();
        match args.output {
            Some(Output::Yaml) => out!("{}", serialize(&all, single, true)?),
            Some(Output::Json) => out!("{}", serialize(&all, single, false)?),
            Some(Output::Name) => {
                for o in &all {
                    outln!("{}", super::apply::display_name(o));
                }
            }
            None | Some(Output::Wide) => {
                let wide = args.output == Some(Output::Wide);
                let shown: Vec<&(Kind, Vec<Value>)> = groups
                    .iter()
                    .filter(|(_, items)| !items.is_empty())
                    .collect();
                if shown.is_empty() && missing.is_empty() {
                    match ns {
                        Some(ns) => eprintln!("No resources found in {ns} namespace."),
                        None => eprintln!("No resources found."),
                    }
                }
                let qualify = groups.len() > 1;
                let tables: Vec<String> = shown
                    .iter()
                    .map(|(k, items)| table(*k, items, wide, args.all_namespaces, qualify))
                    .collect();
                out!("{}", tables.join("\n"));
            }
        }
        for m in &missing {
            eprintln!("Error from server (NotFound): {m}");
        }
        Ok(if missing.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_in_every_form() {
        let a = |v: &[&str]| parse_targets(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(a(&["sgsbk"]).unwrap(), [(Kind::SGShardedBackup, None)]);
        assert_eq!(
            a(&["sgbkp,SGObjectStorage"]).unwrap(),
            [(Kind::SGBackup, None), (Kind::SGObjectStorage, None)]
        );
        assert_eq!(
            a(&["sgshardedbackups", "x", "y"]).unwrap(),
            [
                (Kind::SGShardedBackup, Some("x".into())),
                (Kind::SGShardedBackup, Some("y".into()))
            ]
        );
        assert_eq!(
            a(&["sgsbk/x", "secret/s"]).unwrap(),
            [
                (Kind::SGShardedBackup, Some("x".into())),
                (Kind::Secret, Some("s".into()))
            ]
        );
        assert!(a(&["pods"]).is_err());
        assert!(a(&["sgsbk,sgbkp", "x"]).is_err());
    }

    #[test]
    fn humans_read_sizes_and_durations() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1073741824), "1.0 GiB");
        assert_eq!(human_bytes(5368709120), "5.0 GiB");
        assert_eq!(human_duration(45), "45s");
        assert_eq!(human_duration(330), "5m30s");
        assert_eq!(human_duration(2700), "45m");
        assert_eq!(human_duration(3 * 86400 + 7200), "3d2h");
    }
}
