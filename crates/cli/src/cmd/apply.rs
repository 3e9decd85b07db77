//! `shardvault apply -f FILE|DIR|-`: create or update resources from manifests.

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};
use serde::Deserialize;
use serde_json::Value;

use super::client::{ConnArgs, identify, runtime};
use super::stdout::outln;

/// Options of `shardvault apply`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Manifest file, directory of manifests (*.yaml, *.yml, *.json) or `-` for stdin;
    /// may be given several times.
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<String>,
    /// Namespace for manifests that name none.
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    #[command(flatten)]
    conn: ConnArgs,
}

/// One manifest and where it came from.
pub struct Manifest {
    /// `file.yaml` or `file.yaml#2` for the second document.
    pub source: String,
    /// The document.
    pub doc: Value,
}

/// Reads every document of the files, directories and `-` given, in order. Fails before
/// anything is sent when one cannot be read or parsed.
pub fn read_manifests(files: &[String], namespace: Option<&str>) -> anyhow::Result<Vec<Manifest>> {
    let mut out = Vec::new();
    for f in files {
        if f == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("cannot read manifests from stdin")?;
            parse_documents("<stdin>", &text, &mut out)?;
            continue;
        }
        let path = Path::new(f);
        if path.is_dir() {
            let mut entries: Vec<_> = std::fs::read_dir(path)
                .with_context(|| format!("cannot read the directory {f}"))?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.extension()
                        .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
                })
                .collect();
            entries.sort();
            if entries.is_empty() {
                bail!("{f}: no *.yaml, *.yml or *.json manifests in this directory");
            }
            for p in entries {
                read_file(&p, &mut out)?;
            }
        } else {
            read_file(path, &mut out)?;
        }
    }
    if let Some(ns) = namespace {
        for m in &mut out {
            if let Some(meta) = m.doc.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.entry("namespace").or_insert_with(|| Value::from(ns));
            }
        }
    }
    Ok(out)
}

fn read_file(path: &Path, out: &mut Vec<Manifest>) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {}: check the path given to -f", path.display()))?;
    parse_documents(&path.display().to_string(), &text, out)
}

fn parse_documents(source: &str, text: &str, out: &mut Vec<Manifest>) -> anyhow::Result<()> {
    let mut n = 0;
    for de in yaml_serde::Deserializer::from_str(text) {
        n += 1;
        let doc = Value::deserialize(de)
            .with_context(|| format!("{source}: document {n} is not valid YAML"))?;
        if doc.is_null() {
            continue;
        }
        if !doc.is_object() {
            bail!("{source}: document {n} is not a mapping with apiVersion, kind and metadata");
        }
        let source = if n == 1 {
            source.to_string()
        } else {
            format!("{source}#{n}")
        };
        out.push(Manifest { source, doc });
    }
    Ok(())
}

/// `kind.group/name` as kubectl prints it.
pub fn display_name(doc: &Value) -> String {
    match identify(doc) {
        Ok((kind, _, name)) => format!("{}/{name}", kind.qualified()),
        Err(_) => doc
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_string(),
    }
}

/// Applies every manifest; prints one line per object; exit 1 if any was refused.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let manifests = read_manifests(&args.files, args.namespace.as_deref())?;
    if manifests.is_empty() {
        bail!("no objects passed to apply: the files hold no documents");
    }
    runtime()?.block_on(async {
        let client = args.conn.connect().await?;
        let mut failed = false;
        for m in manifests {
            match client.apply(&m.doc).await {
                Ok((obj, outcome)) => outln!("{} {outcome}", display_name(&obj)),
                Err(e) => {
                    failed = true;
                    eprintln!("error: {}: {}", m.source, super::error_chain::sentence(&e));
                }
            }
        }
        Ok(if failed {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        })
    })
}
