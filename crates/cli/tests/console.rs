//! The web console in a real browser (Debian's headless Chromium) against a running daemon:
//! the page shows the cluster, its members and backups, the growth chart has one point per
//! completed backup, a backup's detail lists its SGBackups, and nothing is shown without the
//! token, and a running backup shows its progress. A screenshot of the page (with that backup
//! running) is kept in the test's target directory.

use std::path::Path;
use std::process::Command;

use shardvault_testkit::daemon::{Daemon, phase, ready};
use shardvault_testkit::manifests::{DdpCluster, filesystem_storage, sharded_backup};

/// Loads `url` in headless Chromium with its own profile under `dir`, lets scripts run, and
/// returns the DOM; with `screenshot`, also saves a PNG of the page there.
fn chromium(dir: &Path, url: &str, screenshot: Option<&Path>) -> String {
    let mut cmd = Command::new("chromium");
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--hide-scrollbars",
        "--window-size=1280,1400",
        "--virtual-time-budget=10000",
    ])
    .arg(format!(
        "--user-data-dir={}",
        dir.join("chromium-profile").display()
    ));
    match screenshot {
        Some(png) => cmd.arg(format!("--screenshot={}", png.display())),
        None => cmd.arg("--dump-dom"),
    };
    let out = cmd
        .arg(url)
        .output()
        .expect("chromium runs (scripts/setup.sh installs it)");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("the DOM is UTF-8")
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

#[test]
fn the_console_shows_clusters_backups_and_one_chart_point_per_backup() {
    let d = Daemon::start_with(&["--console-listen", "127.0.0.1:0"]);
    let storage = d.state().join("objects");
    d.apply(&filesystem_storage("local", &storage));
    d.apply(&DdpCluster::new("shop").shards(1).backups_to("local").yaml());
    d.wait_until("sgshardedcluster", "shop", 120, ready);
    for name in ["shop-first", "shop-second"] {
        d.apply(&sharded_backup(name, "shop", &[]));
        let b = d.wait_until("sgshardedbackup", name, 120, |o| {
            matches!(phase(o), "Completed" | "Failed")
        });
        assert_eq!(phase(&b), "Completed", "{b:#}");
    }
    let url =
        std::fs::read_to_string(d.state().join("console.url")).expect("the console's address");
    let url = url.trim();
    let base = url.split("/login").next().unwrap();

    let denied = chromium(d.state(), &format!("{base}/"), None);
    assert!(denied.contains("needs the daemon's token"), "{denied}");
    assert!(!denied.contains("shop-first"), "{denied}");

    let page = chromium(d.state(), url, None);
    assert!(page.contains(r#"data-cluster="shop""#), "{page}");
    assert!(
        page.contains("shop-coord") && page.contains("shop-shard0"),
        "{page}"
    );
    // WAL archive lag per member: both members answered, archiving works.
    assert_eq!(
        count(&page, r#"<td class="archive-lag" data-pending=""#),
        2,
        "{page}"
    );
    for name in ["shop-first", "shop-second"] {
        assert!(
            page.contains(&format!(r#"<tr class="backup" data-backup="{name}""#)),
            "{page}"
        );
        assert!(page.contains(&format!(r#"data-backup="{name}""#)), "{page}");
    }
    // Chartist draws one `ct-point` per value: two series (stored, WAL) of two backups.
    assert_eq!(count(&page, r#"class="ct-point""#), 4, "{page}");
    assert_eq!(count(&page, "<rect class=\"Completed\""), 2, "{page}");

    let detail = chromium(
        d.state(),
        &format!("{url}#backup/default/shop-second"),
        None,
    );
    assert!(
        detail.contains(r#"data-sgbackup="shop-second-coord""#),
        "{detail}"
    );
    assert!(
        detail.contains(r#"data-sgbackup="shop-second-shard0""#),
        "{detail}"
    );

    // A backup that runs (reads throttled to 4 MB/s) shows its progress bar and sentence.
    d.apply(
        &DdpCluster::new("shop")
            .shards(1)
            .backups_to("local")
            .entry_line("performance: {maxDiskBandwidth: 4000000}")
            .yaml(),
    );
    d.apply(&sharded_backup("shop-third", "shop", &[]));
    d.wait_until("sgshardedbackup", "shop-third", 60, |o| {
        o["status"]["progress"]["bytesDone"].as_u64().unwrap_or(0) > 0
    });
    let running = chromium(d.state(), url, None);
    let row = running
        .split(r#"<tr class="backup" data-backup="shop-third""#)
        .nth(1)
        .and_then(|r| r.split("</tr>").next())
        .unwrap_or_else(|| panic!("no row for shop-third: {running}"));
    assert!(
        row.contains(r#"<span class="progress"><progress"#) && row.contains("copying"),
        "{row}"
    );

    let png = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console.png");
    chromium(d.state(), url, Some(&png));
    let bytes = std::fs::read(&png).expect("the screenshot");
    assert!(
        bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000,
        "{} bytes",
        bytes.len()
    );
}
