//! The triage stages around the agent, in the order an incident meets them: pre-triage
//! ([`pre`]: pending → queued, skipped or deferred, through the pre-triage plugins) before the
//! claim, and post-triage ([`post`]: the post-triage plugins over the agent's result, then the
//! report into `triage_reports`) after the agent. Both run for every incident whatever path it
//! took, including a run re-attached after a restart.

mod post;
mod pre;

pub use post::{PostTriage, run_chain as run_post_triage_chain};
pub use pre::{Decision, PluginPreTriage, PreTriage, Ruling, run};
