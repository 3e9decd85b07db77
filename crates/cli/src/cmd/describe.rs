//! `shardvault describe KIND NAME`: an object's metadata, spec, status and Events.

use std::fmt::Write;
use std::process::ExitCode;

use serde_json::Value;
use shardvault_api::Kind;

use super::client::{ConnArgs, runtime};
use super::get::{age, format_table, parse_targets};
use super::stdout::out;

/// Options of `shardvault describe`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// KIND NAME... or KIND/NAME...
    #[arg(required = true, num_args = 1..)]
    resources: Vec<String>,
    /// Namespace.
    #[arg(short = 'n', long, default_value = shardvault_store::DEFAULT_NAMESPACE)]
    namespace: String,
    #[command(flatten)]
    conn: ConnArgs,
}

fn map_lines(v: Option<&Value>, skip: &[&str]) -> String {
    let entries: Vec<String> = v
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter(|(k, _)| !skip.contains(&k.as_str()))
                .map(|(k, v)| {
                    format!(
                        "{k}={}",
                        v.as_str().map_or_else(|| v.to_string(), str::to_string)
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    if entries.is_empty() {
        "<none>".into()
    } else {
        entries.join("\n              ")
    }
}

fn indented_yaml(v: &Value) -> String {
    let text = yaml_serde::to_string(v).unwrap_or_default();
    text.lines().map(|l| format!("  {l}\n")).collect()
}

/// The text `describe` prints for one object and its Events. Secret values are shown as
/// sizes only.
pub fn render(obj: &Value, events: &[Value]) -> String {
    let m = &obj["metadata"];
    let mut out = String::new();
    let kind = obj["kind"].as_str().unwrap_or("");
    let _ = writeln!(out, "Name:         {}", m["name"].as_str().unwrap_or(""));
    let _ = writeln!(out, "Namespace:    {}", shardvault_store::namespace_of(obj));
    let _ = writeln!(
        out,
        "Kind:         {kind} ({})",
        obj["apiVersion"].as_str().unwrap_or("")
    );
    let _ = writeln!(out, "Labels:       {}", map_lines(m.get("labels"), &[]));
    let _ = writeln!(
        out,
        "Annotations:  {}",
        map_lines(m.get("annotations"), &[shardvault_store::LAST_APPLIED])
    );
    let created = m["creationTimestamp"].as_str();
    let _ = writeln!(
        out,
        "Created:      {} ({} ago)",
        created.unwrap_or("-"),
        age(created)
    );
    if let Some(d) = m["deletionTimestamp"].as_str() {
        let _ = writeln!(out, "Deleting:     since {d}, waiting for finalizers");
    }
    if let Some(owners) = m["ownerReferences"].as_array() {
        for o in owners {
            let _ = writeln!(
                out,
                "Owned by:     {}/{}",
                o["kind"].as_str().unwrap_or(""),
                o["name"].as_str().unwrap_or("")
            );
        }
    }
    if let Some(f) = m["finalizers"].as_array().filter(|f| !f.is_empty()) {
        let names: Vec<&str> = f.iter().filter_map(Value::as_str).collect();
        let _ = writeln!(out, "Finalizers:   {}", names.join(", "));
    }
    if kind == Kind::Secret.name() {
        let _ = writeln!(
            out,
            "Type:         {}",
            obj["type"].as_str().unwrap_or("Opaque")
        );
        let _ = writeln!(out, "Data:");
        for (k, v) in obj["data"].as_object().into_iter().flatten() {
            let len = v
                .as_str()
                .and_then(shardvault_api::secret::base64_decode)
                .map_or(0, |b| b.len());
            let _ = writeln!(out, "  {k}:  {len} bytes");
        }
    }
    for (title, field) in [("Spec", "spec"), ("Status", "status")] {
        if let Some(v) = obj.get(field) {
            let _ = write!(out, "{title}:\n{}", indented_yaml(v));
        }
    }
    if events.is_empty() {
        let _ = writeln!(out, "Events:       <none>");
    } else {
        let rows: Vec<Vec<String>> = events
            .iter()
            .map(|e| {
                let count = e["count"].as_u64().unwrap_or(1);
                let seen = age(e["lastTimestamp"].as_str());
                vec![
                    e["type"].as_str().unwrap_or("").to_string(),
                    e["reason"].as_str().unwrap_or("").to_string(),
                    if count > 1 {
                        format!("{seen} (x{count})")
                    } else {
                        seen
                    },
                    e["message"].as_str().unwrap_or("").to_string(),
                ]
            })
            .collect();
        let _ = writeln!(out, "Events:");
        for l in format_table(&["TYPE", "REASON", "AGE", "MESSAGE"], &rows).lines() {
            let _ = writeln!(out, "  {l}");
        }
    }
    out
}

/// Runs `describe`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let targets = parse_targets(&args.resources)?;
    runtime()?.block_on(async {
        let client = args.conn.connect().await?;
        let mut texts = Vec::new();
        for (kind, name) in targets {
            let objs = match name {
                Some(n) => match client.get(kind, &args.namespace, &n).await? {
                    Some(o) => vec![o],
                    None => anyhow::bail!(
                        "{} {n:?} not found in namespace {}",
                        kind.qualified(),
                        args.namespace
                    ),
                },
                None => client.list(kind, Some(&args.namespace), None).await?,
            };
            for o in objs {
                let events = client.events(&o).await?;
                texts.push(render(&o, &events));
            }
        }
        out!("{}", texts.join("\n\n"));
        Ok(ExitCode::SUCCESS)
    })
}
