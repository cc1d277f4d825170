//! placeholder: replaced by the plugin-host work
