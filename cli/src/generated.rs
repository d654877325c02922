//! The committed, generated files: one JSON Schema and one sample per event
//! type and version, the command API's OpenAPI document and the GraphQL SDL.

use std::path::{Path, PathBuf};

/// Every generated file: path relative to the repository root, and contents.
pub fn files() -> Vec<(PathBuf, String)> {
    let mut files = Vec::new();
    let mut index = Vec::new();
    for entry in pivotal_domain::catalog::catalog() {
        let stem = entry.file_stem();
        let schema = serde_json::to_string_pretty(&entry.schema).unwrap_or_default() + "\n";
        let sample = serde_json::to_string_pretty(&entry.sample).unwrap_or_default() + "\n";
        files.push((
            PathBuf::from(format!("schemas/events/{stem}.schema.json")),
            schema,
        ));
        files.push((
            PathBuf::from(format!("schemas/events/{stem}.sample.json")),
            sample,
        ));
        index.push(serde_json::json!({
            "aggregateType": entry.aggregate_type,
            "type": entry.event_type,
            "version": entry.version,
            "schema": format!("{stem}.schema.json"),
            "sample": format!("{stem}.sample.json"),
        }));
    }
    files.push((
        PathBuf::from("schemas/events/index.json"),
        serde_json::to_string_pretty(&index).unwrap_or_default() + "\n",
    ));
    files.push((
        PathBuf::from("schemas/openapi.json"),
        pivotal_command_api::openapi::document_json(),
    ));
    files.push((
        PathBuf::from("schemas/schema.graphql"),
        pivotal_query_api::schema::sdl(),
    ));
    files
}

/// Writes every file under `root`.
pub fn write(root: &Path) -> std::io::Result<usize> {
    let files = files();
    for (path, contents) in &files {
        let target = root.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(target, contents)?;
    }
    Ok(files.len())
}

/// Paths under `root` whose contents differ from what the code generates
/// (missing files included).
pub fn drifted(root: &Path) -> Vec<PathBuf> {
    files()
        .into_iter()
        .filter(|(path, contents)| {
            std::fs::read_to_string(root.join(path)).ok().as_deref() != Some(contents.as_str())
        })
        .map(|(path, _)| path)
        .collect()
}
