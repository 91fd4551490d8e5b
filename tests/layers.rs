//! The architecture, checked: which top-level module may import which, and where HTTP may
//! appear. The graph is read from the `crate::` paths in `src/`; `cargo test --test layers
//! -- --nocapture` prints it.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

/// Each module and the modules it may import. Layers from the bottom: `domain`; `storage`;
/// `services`; the HTTP layer (`routes`, `middleware`); `startup`. The leaves (`telemetry`,
/// `metrics`, `mail`, `serde_fields`) know no HTTP; `config` parses the settings that each
/// lower module defines for itself.
const ALLOWED: &[(&str, &[&str])] = &[
    ("domain", &[]),
    ("telemetry", &[]),
    ("metrics", &[]),
    ("serde_fields", &[]),
    ("mail", &["domain", "metrics"]),
    ("storage", &["domain", "telemetry"]),
    (
        "services",
        &["domain", "storage", "mail", "metrics", "telemetry"],
    ),
    (
        "config",
        &[
            "domain",
            "storage",
            "services",
            "mail",
            "telemetry",
            "serde_fields",
        ],
    ),
    ("routes", &["domain", "services", "metrics", "serde_fields"]),
    ("middleware", &["config", "routes", "metrics"]),
    (
        "startup",
        &[
            "config",
            "mail",
            "middleware",
            "routes",
            "services",
            "storage",
        ],
    ),
    (
        "main",
        &[
            "config",
            "domain",
            "services",
            "startup",
            "storage",
            "telemetry",
        ],
    ),
];

/// Modules that may use actix: the HTTP layer and its wiring.
const HTTP: &[&str] = &["routes", "middleware", "startup"];

fn rust_files(dir: &Path, into: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, into);
        } else if path.extension().is_some_and(|e| e == "rs") {
            into.push(path);
        }
    }
}

/// The top-level module a source file belongs to (`src/services/users.rs` -> `services`).
fn module_of(src: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(src).unwrap();
    let first = relative.components().next().unwrap();
    let name = first.as_os_str().to_string_lossy();
    name.trim_end_matches(".rs").to_owned()
}

/// The top-level modules named by `crate::...` paths in `code`, including those inside
/// `use crate::{a::X, b::{Y, Z}}` groups.
fn imported_modules(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    for (index, _) in code.match_indices("crate::") {
        let rest = &code[index + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level items of the group: split at commas outside nested braces.
            let mut depth = 0;
            let mut item_start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && !c.is_whitespace() => {
                        found.insert(ident(&group[i..]));
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            found.insert(ident(rest));
        }
    }
    found.retain(|m| !m.is_empty());
    found
}

fn without_comments(code: &str) -> String {
    code.lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn modules_import_only_the_layers_below_them_and_http_stays_in_the_http_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let allowed: BTreeMap<&str, BTreeSet<&str>> = ALLOWED
        .iter()
        .map(|(module, deps)| (*module, deps.iter().copied().collect()))
        .collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut violations = Vec::new();
    for file in &files {
        let module = module_of(&src, file);
        if module == "lib" {
            continue;
        }
        let code = without_comments(&fs::read_to_string(file).unwrap());
        let Some(may_import) = allowed.get(module.as_str()) else {
            violations.push(format!(
                "{}: module {module} has no place in the layers",
                file.display()
            ));
            continue;
        };
        for imported in imported_modules(&code) {
            if imported != module && !may_import.contains(imported.as_str()) {
                violations.push(format!("{}: {module} imports {imported}", file.display()));
            }
            if imported != module {
                graph.entry(module.clone()).or_default().insert(imported);
            }
        }
        if !HTTP.contains(&module.as_str())
            && (code.contains("actix") || code.contains("HttpResponse"))
        {
            violations.push(format!("{}: HTTP below the HTTP layer", file.display()));
        }
    }
    println!("module -> the modules it imports");
    for (module, imports) in &graph {
        let list: Vec<&str> = imports.iter().map(String::as_str).collect();
        println!("  {module} -> {}", list.join(", "));
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

#[test]
fn groups_and_paths_are_both_read() {
    let code =
        "use crate::{\n    domain::{A, B},\n    storage::X,\n};\nlet x = crate::metrics::f();";
    let found: Vec<String> = imported_modules(code).into_iter().collect();
    assert_eq!(found, ["domain", "metrics", "storage"]);
}
