//! Every command's `--help`, walked from clap's command tree so a new command is covered
//! without touching this test: snapshotted, and checked for its own about text and an example.

use clap::CommandFactory;

use crate::Cli;

/// Every command below `cmd` (itself included) with its full name, parents first; clap's
/// generated `help` subcommands are left out.
fn walk(cmd: &clap::Command, path: &str, out: &mut Vec<(String, clap::Command)>) {
    out.push((path.to_string(), cmd.clone()));
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        walk(sub, &format!("{path} {}", sub.get_name()), out);
    }
}

fn commands() -> Vec<(String, clap::Command)> {
    let mut root = Cli::command();
    root.build();
    let mut out = Vec::new();
    walk(&root, "shardvault", &mut out);
    out
}

#[test]
fn every_help_is_snapshotted() {
    for (path, mut cmd) in commands() {
        let help = cmd.render_long_help().to_string();
        insta::with_settings!({snapshot_path => "../tests/snapshots", prepend_module_to_snapshot => false}, {
            insta::assert_snapshot!(format!("help__{}", path.replace(' ', "_")), help, &format!("{path} --help"));
        });
    }
}

#[test]
fn every_command_has_its_own_about_and_an_example() {
    let all = commands();
    assert!(all.len() > 20, "the walk found only {} commands", all.len());
    let mut seen: Vec<(String, String)> = Vec::new();
    for (path, cmd) in &all {
        let about = cmd.get_about().map(ToString::to_string).unwrap_or_default();
        assert!(!about.is_empty(), "{path} has no about text");
        // The struct docs of the argument structs read `Options of ...`: one shown here
        // means a command lost its own help to them.
        assert!(
            !about.starts_with("Options of"),
            "{path} shows its argument struct's doc as help: {about:?}"
        );
        if let Some((other, _)) = seen.iter().find(|(_, a)| *a == about) {
            panic!("{path} and {other} have the same help: {about:?}");
        }
        seen.push((path.clone(), about));
        let example = cmd
            .get_after_help()
            .map(ToString::to_string)
            .unwrap_or_default();
        assert!(
            example.starts_with("Example:\n  ") && example.contains("shardvault "),
            "{path} --help has no example: {example:?}"
        );
    }
}
