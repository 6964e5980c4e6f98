//! This crate is for tests: no crate under `crates/` (what Yard ships) may list it as a normal or
//! build dependency, only under `[dev-dependencies]`.

use std::path::Path;

/// The dependency tables of `manifest` that name `yard-test-support`.
fn tables_naming_test_support(manifest: &str) -> Vec<String> {
    let mut table = String::new();
    let mut found = Vec::new();
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            table = line.trim_matches(|c| c == '[' || c == ']').to_string();
        } else if line.starts_with("yard-test-support") || table.ends_with(".yard-test-support") {
            found.push(table.clone());
        }
    }
    found
}

#[test]
fn only_dev_dependencies_of_shipped_crates() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut checked = 0;
    for entry in std::fs::read_dir(&crates).unwrap() {
        let manifest = entry.unwrap().path().join("Cargo.toml");
        let Ok(text) = std::fs::read_to_string(&manifest) else { continue };
        checked += 1;
        for table in tables_naming_test_support(&text) {
            assert!(
                table.split('.').any(|part| part == "dev-dependencies"),
                "{} lists yard-test-support under [{table}]: it is a dev-dependency only",
                manifest.display()
            );
        }
    }
    assert!(checked >= 9, "read only {checked} manifests under {}", crates.display());
}

#[test]
fn the_check_sees_a_normal_dependency() {
    let bad = "[package]\nname = \"x\"\n\n[dependencies]\nyard-test-support.workspace = true\n";
    assert_eq!(tables_naming_test_support(bad), ["dependencies"]);
    let good = "[dependencies]\nkube = \"1\"\n\n[dev-dependencies]\nyard-test-support = { workspace = true }\n";
    assert_eq!(tables_naming_test_support(good), ["dev-dependencies"]);
    let sub = "[dependencies.yard-test-support]\nworkspace = true\n";
    assert_eq!(tables_naming_test_support(sub), ["dependencies.yard-test-support"]);
}
