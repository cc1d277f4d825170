//! Test fixture: a plugin exporting `nightcrier:plugin/pre-triage-processor@1.0.0` and importing
//! `nightcrier:plugin/alerts@1.0.0`, a WIT major this engine does not accept.

#![allow(missing_docs, unsafe_code)]

wit_bindgen::generate!({ world: "pre-triage", path: "wit" });

struct Future;

impl exports::nightcrier::plugin::pre_triage_processor::Guest for Future {
    fn describe() -> String {
        // never reached (the host refuses the file); the call keeps the import in the component
        nightcrier::plugin::alerts::raise("from the future");
        "from the future".to_owned()
    }
}

export!(Future);
