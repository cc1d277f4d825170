//! placeholder: replaced by the agent work
