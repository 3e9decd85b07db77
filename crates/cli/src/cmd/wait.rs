//! `shardvault wait KIND/NAME --for=...`: block until a condition holds.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use serde_json::Value;

use super::client::{ConnArgs, runtime};
use super::get::parse_targets;
use super::progress_view::{self, View};
use super::stdout::outln;

/// Options of `shardvault wait`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// KIND/NAME... or KIND NAME...
    #[arg(required = true)]
    resources: Vec<String>,
    /// `jsonpath='{.status.process.status}'=Completed`, `condition=Ready` or `delete`.
    #[arg(long = "for", value_parser = parse_condition)]
    condition: Condition,
    /// How long to wait (`90s`, `5m`, `1h`, or seconds).
    #[arg(long, default_value = "30s", value_parser = parse_timeout)]
    timeout: Duration,
    /// Namespace.
    #[arg(short = 'n', long, default_value = shardvault_store::DEFAULT_NAMESPACE)]
    namespace: String,
    #[command(flatten)]
    conn: ConnArgs,
}

/// What `wait` waits for.
#[derive(Clone, Debug, PartialEq)]
pub enum Condition {
    /// The value at a JSONPath (`.a.b[0].c`) equals the text.
    JsonPath(Vec<Step>, String),
    /// `status.conditions[type=X].status` is `True`.
    Named(String),
    /// The object no longer exists.
    Delete,
}

/// One step of a simple JSONPath.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// A field.
    Field(String),
    /// A list index.
    Index(usize),
}

/// Parses `--timeout` (`30s`, `5m`, `1h`, plain seconds, or ISO-8601 such as `PT2M`).
pub fn parse_timeout(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (num, mult) = match t.chars().last() {
        Some('s') => (&t[..t.len() - 1], 1),
        Some('m') => (&t[..t.len() - 1], 60),
        Some('h') => (&t[..t.len() - 1], 3600),
        _ => (t, 1),
    };
    if let Ok(n) = num.parse::<u64>() {
        return Ok(Duration::from_secs(n * mult));
    }
    shardvault_api::quantity::parse_duration(t)
        .map(Duration::from_secs)
        .map_err(|e| format!("{text:?}: {e} (or write 30s, 5m, 1h)"))
}

fn parse_path(path: &str) -> Result<Vec<Step>, String> {
    let mut steps = Vec::new();
    for part in path
        .trim_start_matches('.')
        .split('.')
        .filter(|p| !p.is_empty())
    {
        let (field, rest) = part.split_once('[').map_or((part, ""), |(f, r)| (f, r));
        if !field.is_empty() {
            steps.push(Step::Field(field.to_string()));
        }
        for idx in rest.split('[').filter(|s| !s.is_empty()) {
            let n = idx
                .trim_end_matches(']')
                .parse()
                .map_err(|_| format!("{part:?}: list indexes must be numbers"))?;
            steps.push(Step::Index(n));
        }
    }
    Ok(steps)
}

/// Parses `--for`.
pub fn parse_condition(text: &str) -> Result<Condition, String> {
    if text == "delete" {
        return Ok(Condition::Delete);
    }
    if let Some(c) = text.strip_prefix("condition=") {
        return Ok(Condition::Named(c.to_string()));
    }
    let Some(rest) = text.strip_prefix("jsonpath=") else {
        return Err(format!(
            "{text:?}: use jsonpath='{{.status.process.status}}'=Completed, condition=NAME or delete"
        ));
    };
    let rest = rest.trim_matches('\'');
    let (path, value) = rest
        .strip_prefix('{')
        .and_then(|r| r.split_once('}'))
        .ok_or_else(|| format!("{text:?}: the JSONPath goes in braces: jsonpath='{{.status.process.status}}'=Completed"))?;
    let value = value
        .trim_start_matches('\'')
        .strip_prefix('=')
        .ok_or_else(|| {
            format!("{text:?}: give the value to wait for after '=': ...='{{{path}}}'=Completed")
        })?;
    Ok(Condition::JsonPath(
        parse_path(path)?,
        value.trim_matches('\'').to_string(),
    ))
}

impl Condition {
    /// True when the condition holds for the object (`None` = gone).
    pub fn holds(&self, obj: Option<&Value>) -> bool {
        match (self, obj) {
            (Condition::Delete, o) => o.is_none(),
            (_, None) => false,
            (Condition::JsonPath(steps, want), Some(o)) => {
                let mut v = o;
                for s in steps {
                    let next = match s {
                        Step::Field(f) => v.get(f),
                        Step::Index(i) => v.get(*i),
                    };
                    match next {
                        Some(n) => v = n,
                        None => return false,
                    }
                }
                v.as_str().map_or_else(|| v.to_string(), str::to_string) == *want
            }
            (Condition::Named(c), Some(o)) => o
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|x| x["type"] == c.as_str() && x["status"] == "True")
                }),
        }
    }
}

/// Runs `wait`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let targets = parse_targets(&args.resources)?;
    runtime()?.block_on(async {
        let client = args.conn.connect().await?;
        for (kind, name) in targets {
            let Some(name) = name else {
                bail!("give the object to wait for as KIND/NAME");
            };
            if args.condition != Condition::Delete
                && client.get(kind, &args.namespace, &name).await?.is_none()
            {
                bail!(
                    "{} {name:?} not found in namespace {}",
                    kind.qualified(),
                    args.namespace
                );
            }
            let cond = &args.condition;
            let mut view = View::new();
            let waited = client
                .wait_for(kind, &args.namespace, &name, args.timeout, |o| {
                    view.show(&name, o.and_then(|o| progress_view::of(kind, o)));
                    cond.holds(o)
                })
                .await;
            view.show(&name, None);
            waited.map_err(|e| anyhow::anyhow!("{e}: the condition {cond:?} did not hold"))?;
            match cond {
                Condition::Delete => outln!("{}/{name} deleted", kind.qualified()),
                _ => outln!("{}/{name} condition met", kind.qualified()),
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn conditions_parse_and_hold() {
        let c = parse_condition("jsonpath='{.status.process.status}'=Completed").unwrap();
        assert!(c.holds(Some(
            &json!({"status": {"process": {"status": "Completed"}}})
        )));
        assert!(!c.holds(Some(&json!({"status": {"process": {"status": "Running"}}}))));
        let c = parse_condition("jsonpath={.status.sgBackups[1]}=b-shard0").unwrap();
        assert!(c.holds(Some(
            &json!({"status": {"sgBackups": ["b-coord", "b-shard0"]}})
        )));
        assert!(parse_condition("jsonpath={.a}").is_err());
        assert!(parse_condition("ready").is_err());
        assert_eq!(parse_condition("delete").unwrap(), Condition::Delete);
    }

    #[test]
    fn timeouts_parse() {
        assert_eq!(parse_timeout("60s").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_timeout("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_timeout("PT2M").unwrap(), Duration::from_secs(120));
        assert!(parse_timeout("soon").is_err());
    }
}
