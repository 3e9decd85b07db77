//! Debian's `gpg` in its own temporary home, to make OpenPGP keys as users do and to check
//! that stored objects open with a standard OpenPGP tool.

use std::process::{Command, Output, Stdio};

use tempfile::TempDir;

/// A GnuPG home of its own; its agent is stopped when dropped.
#[derive(Debug)]
pub struct Gpg {
    home: TempDir,
}

impl Default for Gpg {
    fn default() -> Self {
        Gpg::new()
    }
}

impl Gpg {
    /// A fresh, empty GnuPG home (under /tmp: the agent's socket path must stay short).
    pub fn new() -> Gpg {
        assert!(
            Command::new("gpg").arg("--version").output().is_ok(),
            "gpg is not installed: run scripts/setup.sh (it installs Debian's gnupg)"
        );
        let home = tempfile::Builder::new()
            .prefix("sv-gpg")
            .tempdir_in("/tmp")
            .expect("temporary GnuPG home");
        Gpg { home }
    }

    fn run(&self, args: &[&str], input: Option<&[u8]>) -> Output {
        use std::io::Write;
        let mut child = Command::new("gpg")
            .env("GNUPGHOME", self.home.path())
            .args(["--batch", "--quiet", "--pinentry-mode", "loopback"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("gpg runs");
        let mut stdin = child.stdin.take().expect("piped");
        let input = input.unwrap_or_default().to_vec();
        // Fed from a thread: gpg writes its output while it reads, and pipes are small.
        let feeder = std::thread::spawn(move || stdin.write_all(&input));
        let out = child.wait_with_output().expect("gpg finishes");
        feeder.join().expect("feeder thread").expect("gpg input");
        out
    }

    fn ok(&self, args: &[&str], input: Option<&[u8]>) -> Vec<u8> {
        let out = self.run(args, input);
        assert!(
            out.status.success(),
            "gpg {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// Makes a key (ed25519 with a cv25519 encryption subkey) for `uid`, protected by
    /// `passphrase` (none when empty), and returns it armored as `gpg --export-secret-keys`.
    pub fn secret_key(&self, uid: &str, passphrase: &str) -> String {
        self.ok(
            &[
                "--passphrase",
                passphrase,
                "--quick-gen-key",
                uid,
                "future-default",
                "default",
                "never",
            ],
            None,
        );
        let armored = self.ok(
            &[
                "--passphrase",
                passphrase,
                "--armor",
                "--export-secret-keys",
                uid,
            ],
            None,
        );
        String::from_utf8(armored).expect("armored keys are ASCII")
    }

    /// What `gpg --decrypt` makes of `message`, or its error text.
    pub fn decrypt(&self, message: &[u8], passphrase: &str) -> Result<Vec<u8>, String> {
        let out = self.run(&["--passphrase", passphrase, "--decrypt"], Some(message));
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

impl Drop for Gpg {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .env("GNUPGHOME", self.home.path())
            .args(["--kill", "gpg-agent"])
            .output();
    }
}
