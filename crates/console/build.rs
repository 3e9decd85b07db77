//! Checks that the console's npm packages are installed (scripts/setup.sh runs `npm ci`).

fn main() {
    let lib = std::path::Path::new("web/node_modules/chartist/dist/index.umd.js");
    println!("cargo:rerun-if-changed={}", lib.display());
    println!("cargo:rerun-if-changed=web/package-lock.json");
    if !lib.exists() {
        panic!(
            "the console's chart library is missing ({}): run `bash scripts/setup.sh` \
             (it runs `npm ci --prefix crates/console/web`)",
            lib.display()
        );
    }
}
