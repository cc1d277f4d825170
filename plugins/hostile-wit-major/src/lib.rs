//! Test fixture: a plugin exporting `nightcrier:plugin/pre-triage-processor@1.0.0`, a WIT major this engine does not accept.

#![allow(missing_docs, unsafe_code)]

wit_bindgen::generate!({ world: "pre-triage", path: "wit" });

struct Future;

impl exports::nightcrier::plugin::pre_triage_processor::Guest for Future {
    fn describe() -> String {
        "from the future".to_owned()
    }
}

export!(Future);
