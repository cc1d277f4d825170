//! The generated bindings for the plugin worlds (generated code only); `types` and `host` are shared.

#![allow(missing_docs, unreachable_pub, clippy::all)]

pub(crate) mod source {
    wasmtime::component::bindgen!({
        world: "source",
        path: "../../wit",
        imports: { default: async | trappable },
        exports: { default: async },
        additional_derives: [serde::Serialize, serde::Deserialize, PartialEq],
    });
}

pub(crate) mod pre_triage {
    wasmtime::component::bindgen!({
        world: "pre-triage",
        path: "../../wit",
        imports: { default: async | trappable },
        exports: { default: async },
        additional_derives: [serde::Serialize, serde::Deserialize, PartialEq],
        with: {
            "nightcrier:plugin/types": super::source::nightcrier::plugin0_1_2::types,
            "nightcrier:plugin/host": super::source::nightcrier::plugin0_1_2::host,
        },
    });
}

pub(crate) mod post_triage {
    wasmtime::component::bindgen!({
        world: "post-triage",
        path: "../../wit",
        imports: { default: async | trappable },
        exports: { default: async },
        additional_derives: [serde::Serialize, serde::Deserialize, PartialEq],
        with: {
            "nightcrier:plugin/types": super::source::nightcrier::plugin0_1_2::types,
            "nightcrier:plugin/host": super::source::nightcrier::plugin0_1_2::host,
            "wasi:http": wasmtime_wasi_http::p2::bindings::http,
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
        },
    });
}

/// `post-triage-alerts` (0.1.2): only its `alert-handler` export is used (its
/// `GuestIndices`, looked up on a post-triage component that exports it); the post-triage half
/// is called through [`post_triage`].
pub(crate) mod post_triage_alerts {
    wasmtime::component::bindgen!({
        world: "post-triage-alerts",
        path: "../../wit",
        imports: { default: async | trappable },
        exports: { default: async },
        additional_derives: [serde::Serialize, serde::Deserialize, PartialEq],
        with: {
            "nightcrier:plugin/types": super::source::nightcrier::plugin0_1_2::types,
            "nightcrier:plugin/host": super::source::nightcrier::plugin0_1_2::host,
            "wasi:http": wasmtime_wasi_http::p2::bindings::http,
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
        },
    });
}
