//! Test fixture: a valid component exporting `acme:other/greeter`, which fits no nightcrier world.

#![allow(missing_docs, unsafe_code)]

wit_bindgen::generate!({ world: "greeter-world", path: "wit" });

struct Greeter;

impl exports::acme::other::greeter::Guest for Greeter {
    fn greet(name: String) -> String {
        format!("hello {name}")
    }
}

export!(Greeter);
