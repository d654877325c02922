//! The committed generated files (event schemas and samples, OpenAPI, SDL)
//! must match the code. Regenerate with `pivotal schemas`.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

#[test]
fn committed_generated_files_match_the_code() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let drifted = pivotal_cli::generated::drifted(&root);
    assert!(
        drifted.is_empty(),
        "out of date: {drifted:?}; run `cargo run -p pivotal-cli -- schemas` and commit"
    );
}

#[test]
fn every_sample_validates_against_its_schema() {
    for entry in pivotal_domain::catalog::catalog() {
        let validator =
            jsonschema::validator_for(&serde_json::to_value(&entry.schema).unwrap()).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&entry.sample)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{}: {errors:?}", entry.event_type);
        let mut broken = entry.sample.clone();
        // Every event's data names its aggregate: customerId, userId, ...
        let mut camel = String::new();
        let mut upper = false;
        for c in entry.aggregate_type.chars() {
            if c == '_' {
                upper = true;
            } else if upper {
                camel.push(c.to_ascii_uppercase());
                upper = false;
            } else {
                camel.push(c);
            }
        }
        let id_field = format!("{camel}Id");
        assert!(
            entry.sample["data"].get(&id_field).is_some(),
            "{}: data lacks {id_field}",
            entry.event_type
        );
        broken["data"][id_field.as_str()] = serde_json::json!(42);
        assert!(
            !validator.is_valid(&broken),
            "{}: schema accepts a wrong type",
            entry.event_type
        );
    }
}
