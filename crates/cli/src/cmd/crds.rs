//! `shardvault crds`: the CustomResourceDefinitions of the StackGres kinds as a YAML stream.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;

/// Prints every CRD, each a YAML document, to stdout (a closed pipe ends it quietly).
pub fn run() -> anyhow::Result<ExitCode> {
    let text = yaml_stream()?;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("cannot write the CRDs to stdout")
        }
        _ => Ok(ExitCode::SUCCESS),
    }
}

/// The CRDs as one YAML stream, `---` before each document.
fn yaml_stream() -> anyhow::Result<String> {
    let mut out = String::new();
    for crd in shardvault_api::crds() {
        out.push_str("---\n");
        out.push_str(&yaml_serde::to_string(&crd).context("cannot write a CRD as YAML")?);
    }
    Ok(out)
}
