//! The web UI's pages as maud templates: a layout with the navigation, then one function per
//! page, each taking a view struct of what its handler loaded. maud escapes every `(value)` it
//! writes; the only markup written unescaped is the report, which `report::render::fragment`
//! has already sanitised.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use chrono::{DateTime, SecondsFormat, Utc};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use nightcrier_intake::FeedState;
use nightcrier_plugin_host::CallStats;
use nightcrier_plugin_host::PluginSummary;
use serde_json::Value;

use super::session::{Grant, Viewer};
use crate::ingest::IngestStats;
use crate::plugin::RefusedPlugin;
use crate::queue::{Incident, JobStatus};
use crate::store::entity::{
    agent_executions, circuit_breakers, fault_events, plugin_runs, rejected_events, triage_reports,
};

/// Which navigation entry is the current page.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Nav {
    Incidents,
    Clusters,
    Plugins,
    Rejected,
    None,
}

fn layout(title: &str, viewer: Option<&Viewer>, nav: Nav, body: Markup) -> Markup {
    let link = |target: Nav, href: &str, label: &str| {
        html! {
            a href=(href) aria-current=[(nav == target).then_some("page")] { (label) }
        }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · nightcrier" }
                link rel="stylesheet" href="/assets/app.css";
                script src="/assets/app.js" defer {}
            }
            body {
                header.top {
                    a.brand href="/" { "nightcrier" }
                    @if let Some(viewer) = viewer {
                        nav {
                            (link(Nav::Incidents, "/", "Incidents"))
                            (link(Nav::Clusters, "/clusters", "Clusters"))
                            (link(Nav::Plugins, "/plugins", "Plugins"))
                            (link(Nav::Rejected, "/rejected", "Rejected"))
                        }
                        @if viewer.logged_in {
                            form.logout method="post" action="/logout" {
                                input type="hidden" name="csrf" value=(viewer.csrf);
                                span.who { @if viewer.grant == Grant::Admin { "admin" } @else { "read-only" } }
                                button type="submit" { "Log out" }
                            }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// `at` as a short absolute UTC time.
fn time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// How long before `now` `at` was, in the largest unit that fits.
fn ago(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let seconds = (now - at).num_seconds();
    match seconds {
        s if s < 0 => "just now".to_owned(),
        s if s < 60 => format!("{s}s ago"),
        s if s < 3600 => format!("{}m ago", s / 60),
        s if s < 86400 => format!("{}h {}m ago", s / 3600, (s % 3600) / 60),
        s => format!("{}d {}h ago", s / 86400, (s % 86400) / 3600),
    }
}

fn when(at: DateTime<Utc>, now: DateTime<Utc>) -> Markup {
    html! {
        time datetime=(at.to_rfc3339_opts(SecondsFormat::Secs, true)) title=(time(at)) { (ago(at, now)) }
    }
}

/// A CSS class word from untrusted text: lower-case ASCII letters only.
fn word(text: &str) -> String {
    text.chars()
        .filter(char::is_ascii_alphabetic)
        .take(16)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

fn status_badge(status: JobStatus) -> Markup {
    html! { span class={ "badge status status-" (status.as_str()) } { (status_label(status)) } }
}

fn status_label(status: JobStatus) -> &'static str {
    match status {
        JobStatus::Pending => "pending",
        JobStatus::Queued => "queued",
        JobStatus::Skipped => "skipped",
        JobStatus::Investigating => "investigating",
        JobStatus::Resolved => "resolved",
        JobStatus::AgentFailed => "agent failed",
        JobStatus::Failed => "failed",
    }
}

fn severity_badge(severity: &str) -> Markup {
    html! { span class={ "badge sev sev-" (word(severity)) } { (severity) } }
}

fn resource_of(event: &fault_events::Model) -> Option<String> {
    match (&event.resource_kind, &event.resource_name) {
        (Some(kind), Some(name)) => Some(format!("{kind}/{name}")),
        (None, Some(name)) => Some(name.clone()),
        _ => None,
    }
}

/// An error page.
pub(super) fn error(viewer: Option<&Viewer>, title: &str, detail: &str) -> Markup {
    layout(
        title,
        viewer,
        Nav::None,
        html! {
            section.panel.error {
                h1 { (title) }
                p { (detail) }
                p { a href="/" { "Back to the incidents" } }
            }
        },
    )
}

/// The login form.
pub(super) fn login(next: &str, problem: Option<&str>) -> Markup {
    layout(
        "Log in",
        None,
        Nav::None,
        html! {
            section.panel.login {
                h1 { "Log in" }
                p.muted { "Paste the read token to look, or the admin token to also retry incidents (" code { "[http] read_token_*" } ", " code { "admin_token_*" } ")." }
                @if let Some(problem) = problem {
                    p.problem role="alert" { (problem) }
                }
                form method="post" action="/login" {
                    input type="hidden" name="next" value=(next);
                    label for="token" { "Token" }
                    input #token type="password" name="token" autocomplete="current-password" required autofocus;
                    button type="submit" { "Log in" }
                }
            }
        },
    )
}

/// One row of the incident list.
pub(super) struct ListItem {
    pub(super) incident: Incident,
    pub(super) event: Option<fault_events::Model>,
}

/// What the incident list shows.
pub(super) struct IncidentsView<'a> {
    pub(super) viewer: &'a Viewer,
    pub(super) items: &'a [ListItem],
    pub(super) status: &'a str,
    pub(super) cluster: &'a str,
    pub(super) severity: &'a str,
    pub(super) fault_type: &'a str,
    pub(super) window: &'a str,
    pub(super) windows: &'a [(&'a str, &'a str, i64)],
    pub(super) filtered: bool,
    pub(super) paged: bool,
    pub(super) next_link: Option<String>,
    pub(super) first_link: String,
    pub(super) now: DateTime<Utc>,
}

/// The incident list: filters, then the newest incidents first.
pub(super) fn incidents(view: &IncidentsView<'_>) -> Markup {
    let body = html! {
        form.filters method="get" action="/" {
            label {
                span { "Status" }
                select name="status" {
                    option value="" selected[view.status.is_empty()] { "any" }
                    @for status in JobStatus::ALL {
                        option value=(status.as_str()) selected[view.status == status.as_str()] { (status_label(status)) }
                    }
                }
            }
            label { span { "Cluster" } input type="text" name="cluster" value=(view.cluster) placeholder="any"; }
            label { span { "Severity" } input type="text" name="severity" value=(view.severity) placeholder="any"; }
            label { span { "Fault type" } input type="text" name="fault_type" value=(view.fault_type) placeholder="any"; }
            label {
                span { "Time" }
                select name="window" {
                    option value="" selected[view.window.is_empty()] { "any time" }
                    @for (value, label, _) in view.windows {
                        option value=(value) selected[view.window == *value] { (label) }
                    }
                }
            }
            div.buttons {
                button type="submit" { "Filter" }
                @if view.filtered { a.button.secondary href="/" { "Clear" } }
            }
        }
        section #incidents data-refresh="10" {
            div.listhead {
                h1 { "Incidents" }
                span.muted { "newest first · " span #updated { "as of " (view.now.format("%H:%M:%S UTC")) } }
            }
            @if view.items.is_empty() {
                p.empty { @if view.filtered || view.paged { "No incidents match." } @else { "No incidents yet: the fleet is quiet." } }
            } @else {
                table.incidents {
                    thead { tr { th { "Status" } th { "Severity" } th { "Fault" } th { "Resource" } th { "Cluster" } th { "Created" } } }
                    tbody {
                        @for item in view.items {
                            @let incident = &item.incident;
                            @let href = format!("/incidents/{}", incident.id);
                            tr class={ "row status-" (incident.status.as_str()) } {
                                td data-label="Status" { (status_badge(incident.status)) }
                                td data-label="Severity" { (severity_badge(incident.severity.as_deref().unwrap_or("?"))) }
                                td data-label="Fault" { a.fault href=(href) { (incident.fault_type.as_deref().unwrap_or("(unknown)")) } }
                                td data-label="Resource" {
                                    span.cell {
                                        @if let Some(event) = &item.event {
                                            @if let Some(namespace) = &event.resource_namespace { span.muted { (namespace) "/" } }
                                            (resource_of(event).unwrap_or_default())
                                        }
                                    }
                                }
                                td data-label="Cluster" { (incident.cluster) }
                                td data-label="Created" { (when(incident.created_at, view.now)) }
                            }
                        }
                    }
                }
            }
            nav.pager {
                @if view.paged { a.button.secondary href=(view.first_link) { "← Newest" } }
                @if let Some(next) = &view.next_link { a.button.secondary rel="next" href=(next) { "Older →" } }
            }
        }
    };
    layout("Incidents", Some(view.viewer), Nav::Incidents, body)
}

/// What one incident's page shows.
pub(super) struct IncidentView<'a> {
    pub(super) viewer: &'a Viewer,
    pub(super) incident: &'a Incident,
    pub(super) event: Option<&'a fault_events::Model>,
    pub(super) runs: &'a [plugin_runs::Model],
    pub(super) executions: &'a [agent_executions::Model],
    pub(super) report: Option<&'a triage_reports::Model>,
    /// The report, rendered and sanitised.
    pub(super) report_html: Option<&'a str>,
    pub(super) log: Option<&'a str>,
    pub(super) notice: Option<&'a str>,
    pub(super) now: DateTime<Utc>,
}

fn json_text(value: &Value) -> String {
    let value = super::api::document(value);
    serde_json::to_string_pretty(&value).unwrap_or_default()
}

fn duration_us(us: i64) -> String {
    if us >= 1_000_000 {
        format!("{:.2} s", us as f64 / 1e6)
    } else {
        format!("{:.1} ms", us as f64 / 1e3)
    }
}

/// One incident: what happened, its state and report at the top; the runs, the decisions and
/// the raw event below.
pub(super) fn incident(view: &IncidentView<'_>) -> Markup {
    let incident = view.incident;
    let event = view.event;
    let live = matches!(
        incident.status,
        JobStatus::Investigating | JobStatus::Queued | JobStatus::Pending
    );
    let title = format!(
        "{} on {}",
        incident.fault_type.as_deref().unwrap_or("Incident"),
        incident.cluster
    );
    let body = html! {
        @if let Some(notice) = view.notice { p.notice role="status" { (notice) } }
        section.panel.summary #summary data-status=(incident.status.as_str()) data-live=[live.then_some("1")] {
            div.headline {
                (status_badge(incident.status))
                (severity_badge(incident.severity.as_deref().unwrap_or("?")))
                h1 { (incident.fault_type.as_deref().unwrap_or("Incident")) }
            }
            p.what {
                @if let Some(event) = event {
                    @if let Some(resource) = resource_of(event) { strong { (resource) } }
                    @if let Some(namespace) = &event.resource_namespace { " in namespace " strong { (namespace) } }
                    " on cluster "
                }
                @else { "Cluster " }
                strong { (incident.cluster) }
            }
            @if let Some(event) = event {
                blockquote.context { (event.context) }
            }
            dl.facts {
                div { dt { "Created" } dd { (when(incident.created_at, view.now)) br; span.muted { (time(incident.created_at)) } } }
                @if let Some(at) = incident.started_at { div { dt { "Agent started" } dd { (when(at, view.now)) } } }
                @if let Some(at) = incident.completed_at { div { dt { "Ended" } dd { (when(at, view.now)) } } }
                div { dt { "Attempts" } dd { (incident.attempts) } }
                @if let Some(profile) = &incident.agent_profile { div { dt { "Agent profile" } dd { (profile) } } }
                @if let Some(code) = incident.exit_code { div { dt { "Exit code" } dd { (code) } } }
                div { dt { "Id" } dd { code { (incident.id) } } }
            }
            @if let Some(reason) = &incident.skip_reason { p.reason { strong { "Skipped: " } (reason) } }
            @if let Some(reason) = &incident.failure_reason { p.reason.problem { strong { "Failed: " } (reason) } }
            @if view.viewer.grant == Grant::Admin && incident.status.is_retryable() {
                form.retry method="post" action={ "/incidents/" (incident.id) "/retry" } {
                    input type="hidden" name="csrf" value=(view.viewer.csrf);
                    button type="submit" { "Retry investigation" }
                }
            }
        }

        section.panel #report {
            h2 { "Report" }
            @match (view.report, view.report_html) {
                (Some(report), Some(report_html)) => {
                    p.muted {
                        "Generated " (when(report.generated_at, view.now))
                        @if let Some(summary) = &report.summary { " · " (summary) }
                    }
                    article.report { (PreEscaped(report_html)) }
                }
                _ => {
                    p.empty {
                        @match incident.status {
                            JobStatus::Investigating => "The agent is still investigating; the report appears here when it is done.",
                            JobStatus::Pending | JobStatus::Queued => "Waiting for an agent.",
                            _ => "No report.",
                        }
                    }
                }
            }
        }

        section.panel #agent {
            h2 { "Agent run" }
            @if view.executions.is_empty() {
                p.empty { "No agent has run yet." }
            } @else {
                table.compact {
                    thead { tr { th { "Attempt" } th { "Started" } th { "Took" } th { "Exit" } th { "Image" } th { "Error" } } }
                    tbody {
                        @for run in view.executions {
                            tr {
                                td data-label="Attempt" { (run.attempt) }
                                td data-label="Started" { (when(run.started_at, view.now)) }
                                td data-label="Took" {
                                    @if let Some(end) = run.completed_at { (format!("{}s", (end - run.started_at).num_seconds())) } @else { span.badge.status.status-investigating { "running" } }
                                }
                                td data-label="Exit" { (run.exit_code.map(|c| c.to_string()).unwrap_or_default()) }
                                td data-label="Image" { code { (run.image.as_deref().unwrap_or_default()) } }
                                td data-label="Error" { (run.error_message.as_deref().unwrap_or_default()) }
                            }
                        }
                    }
                }
            }
            h3 {
                "Agent log"
                @if incident.status == JobStatus::Investigating { " " span.badge.status.status-investigating #live-state { "live" } }
            }
            pre.log #live-log data-src=[live.then(|| format!("/incidents/{}/live", incident.id))] {
                @match view.log {
                    Some(log) if !log.is_empty() => (log),
                    _ => "(no log yet)",
                }
            }
            noscript { p.muted { "Reload the page to see new log lines (live updates need JavaScript)." } }
        }

        section.panel #pre-triage {
            h2 { "Triage decisions" }
            @if view.runs.is_empty() {
                p.empty { "No plugin looked at this incident." }
            } @else {
                table.compact {
                    thead { tr { th { "Stage" } th { "Plugin" } th { "Outcome" } th { "Took" } th { "Detail" } } }
                    tbody {
                        @for run in view.runs {
                            tr {
                                td data-label="Stage" { (run.stage) }
                                td data-label="Plugin" { (run.plugin) @if let Some(version) = &run.plugin_version { span.muted { "@" (version) } } }
                                td data-label="Outcome" { span class={ "badge outcome outcome-" (word(&run.outcome)) } { (run.outcome) } }
                                td data-label="Took" { (duration_us(run.duration_us)) }
                                td data-label="Detail" { (run.error.as_deref().unwrap_or_default()) }
                            }
                        }
                    }
                }
            }
        }

        section.panel #post-triage {
            h2 { "Post-triage" }
            @let structured = view.report.and_then(|report| report.structured.as_ref()).map(super::api::document);
            @if incident.labels.is_empty() && incident.annotations.is_empty() && structured.as_ref().is_none_or(|v| v.as_object().is_none_or(|o| o.is_empty())) {
                p.empty { "No fields set by plugins." }
            } @else {
                dl.fields {
                    @for (name, value) in &incident.labels { div { dt { "label " (name) } dd { (value) } } }
                    @for (name, value) in &incident.annotations { div { dt { "annotation " (name) } dd { (value) } } }
                    @if let Some(Value::Object(fields)) = &structured {
                        @for (name, value) in fields {
                            div { dt { (name) } dd { @match value { Value::String(text) => (text), other => (other.to_string()) } } }
                        }
                    }
                }
            }
        }

        section.panel #event {
            h2 { "Fault event" }
            @if let Some(event) = event {
                dl.facts {
                    div { dt { "Source" } dd { (event.source) } }
                    div { dt { "Received" } dd { (when(event.received_at, view.now)) } }
                    @if let Some(at) = &event.timestamp { div { dt { "Fault time" } dd { (at) } } }
                    @if let Some(id) = &event.fault_id { div { dt { "Fault id" } dd { code { (id) } } } }
                }
                details {
                    summary { "Payload and labels" }
                    pre.json { (json_text(&event.payload)) }
                    pre.json { (json_text(&event.labels)) }
                }
            } @else {
                p.empty { "The fault event is gone (retention)." }
            }
        }
    };
    layout(&title, Some(view.viewer), Nav::Incidents, body)
}

/// What the clusters page shows.
pub(super) struct ClustersView<'a> {
    pub(super) viewer: &'a Viewer,
    pub(super) feeds: &'a [FeedState],
    pub(super) breakers: Option<&'a [circuit_breakers::Model]>,
    pub(super) accepting: bool,
    pub(super) stats: &'a IngestStats,
    pub(super) now: DateTime<Utc>,
}

/// The feeds, the agent breakers per cluster and the intake counters.
pub(super) fn clusters(view: &ClustersView<'_>) -> Markup {
    let stats = view.stats;
    let counter = |value: &std::sync::atomic::AtomicU64| value.load(Ordering::Relaxed);
    let body = html! {
        section.panel {
            h1 { "Feeds" }
            @if view.feeds.is_empty() {
                p.empty { "No feeds: events come in through " code { "nightcrier ingest" } " only." }
            } @else {
                table {
                    thead { tr { th { "Feed" } th { "State" } th { "Last event" } th { "Events" } th { "Failures" } th { "Last error" } } }
                    tbody {
                        @for feed in view.feeds {
                            tr {
                                td data-label="Feed" {
                                    strong { (feed.name) }
                                    br;
                                    span.muted { (serde_json::to_value(feed.kind).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()) " · " (feed.source) " · " (feed.endpoint) }
                                }
                                td data-label="State" {
                                    span class={ "badge phase phase-" (word(feed.phase.as_str())) } { (feed.phase.as_str()) }
                                    " " span.muted { (ago(feed.phase_since, view.now)) }
                                }
                                td data-label="Last event" { @if let Some(at) = feed.last_event_at { (when(at, view.now)) } @else { span.muted { "never" } } }
                                td data-label="Events" { (feed.events_received) }
                                td data-label="Failures" { (feed.failures) }
                                td data-label="Last error" {
                                    @if let Some(error) = &feed.last_error {
                                        span.problem { (error) }
                                        @if let Some(at) = feed.last_error_at { " " span.muted { (ago(at, view.now)) } }
                                    }
                                    @if let Some(error) = &feed.last_subscription_error { br; span.problem { (error) } }
                                }
                            }
                        }
                    }
                }
            }
        }
        section.panel {
            h2 { "Agent breakers" }
            @match view.breakers {
                None => p.problem { "The database did not answer in time." },
                Some([]) => p.empty { "No cluster has had a failing agent." },
                Some(breakers) => {
                    table {
                        thead { tr { th { "Cluster" } th { "Breaker" } th { "Failures" } th { "Last failure" } th { "Reasons" } } }
                        tbody {
                            @for breaker in breakers {
                                @let state = super::api::document(&breaker.state);
                                @let open = state["open"].as_bool().unwrap_or(false);
                                tr {
                                    td data-label="Cluster" { (breaker.scope) }
                                    td data-label="Breaker" { @if open { span.badge.phase.phase-open { "open" } } @else { span.badge.phase.phase-closed { "closed" } } }
                                    td data-label="Failures" title="failures in a row" { (state["consecutive_failures"].as_u64().unwrap_or(0)) }
                                    td data-label="Last failure" {
                                        @match state["last_failure_at"].as_str().and_then(|at| DateTime::parse_from_rfc3339(at).ok()) {
                                            Some(at) => (when(at.with_timezone(&Utc), view.now)),
                                            None => "",
                                        }
                                    }
                                    td data-label="Reasons" {
                                        @if let Some(reasons) = state["recent_reasons"].as_array() {
                                            @for reason in reasons.iter().rev().take(3) { div { (reason.as_str().unwrap_or_default()) } }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        section.panel {
            h2 { "Intake" }
            dl.facts {
                div { dt { "Accepting" } dd { @if view.accepting { "yes" } @else { span.problem { "no" } } } }
                div { dt { "Received" } dd { (counter(&stats.received)) } }
                div { dt { "Events" } dd { (counter(&stats.events)) } }
                div { dt { "Rejected" } dd { a href="/rejected" { (counter(&stats.rejected)) } } }
                div { dt { "Spooled" } dd { (counter(&stats.spooled)) } }
                div { dt { "Dropped" } dd { (counter(&stats.dropped)) } }
            }
        }
    };
    layout("Clusters", Some(view.viewer), Nav::Clusters, body)
}

/// What the plugins page shows.
pub(super) struct PluginsView<'a> {
    pub(super) viewer: &'a Viewer,
    pub(super) configured: bool,
    pub(super) plugins: &'a [PluginSummary],
    pub(super) stats: &'a BTreeMap<String, CallStats>,
    pub(super) refused: &'a [RefusedPlugin],
}

/// The loaded plugins with their grants and call statistics, and the refused files.
pub(super) fn plugins(view: &PluginsView<'_>) -> Markup {
    let body = html! {
        section.panel {
            h1 { "Plugins" }
            @if !view.configured {
                p.empty { "No plugin folder is configured (" code { "[plugins] dir" } ")." }
            } @else if view.plugins.is_empty() {
                p.empty { "The plugin folder holds no plugin." }
            } @else {
                table {
                    thead { tr { th { "Plugin" } th { "World" } th { "Granted" } th { "Calls" } th { "Failures" } th { "Time per call" } } }
                    tbody {
                        @for plugin in view.plugins {
                            @let stats = view.stats.get(&plugin.id);
                            @let calls = stats.map_or(0, |s| s.calls);
                            @let ok = stats.and_then(|s| s.outcomes.get("ok").copied()).unwrap_or(0);
                            tr {
                                td data-label="Plugin" {
                                    strong { (plugin.id) } span.muted { " " (plugin.version) }
                                    br; span.muted { (plugin.description) }
                                }
                                td data-label="World" { (plugin.world.as_str()) br; span.muted { "wit " (plugin.wit_version) } }
                                td data-label="Granted" {
                                    @if plugin.granted.is_empty() { span.muted { "nothing" } } @else { code { (plugin.granted.to_string()) } }
                                    @if plugin.requested != plugin.granted { br; span.muted { "asked: " (plugin.requested.to_string()) } }
                                }
                                td data-label="Calls" { (calls) }
                                td data-label="Failures" {
                                    @if calls > ok { span.problem { (calls - ok) } } @else { "0" }
                                    @if let Some(stats) = stats {
                                        @for (outcome, count) in &stats.outcomes {
                                            @if *outcome != "ok" { br; span.muted { (outcome) ": " (count) } }
                                        }
                                    }
                                }
                                td data-label="Time per call" {
                                    @if let Some(stats) = stats.filter(|s| s.calls > 0) {
                                        "avg " (duration_us(i64::try_from(stats.total_us / stats.calls).unwrap_or(i64::MAX)))
                                        br; span.muted { "max " (duration_us(i64::try_from(stats.max_us).unwrap_or(i64::MAX))) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if !view.refused.is_empty() {
            section.panel {
                h2 { "Refused plugin files" }
                table {
                    thead { tr { th { "File" } th { "Why" } } }
                    tbody {
                        @for refused in view.refused {
                            tr { td data-label="File" { (refused.id) } td data-label="Why" { span.problem { (refused.reason) } } }
                        }
                    }
                }
            }
        }
    };
    layout("Plugins", Some(view.viewer), Nav::Plugins, body)
}

/// What the rejected events page shows.
pub(super) struct RejectedView<'a> {
    pub(super) viewer: &'a Viewer,
    pub(super) rows: &'a [rejected_events::Model],
    pub(super) next_link: Option<String>,
    pub(super) paged: bool,
    pub(super) now: DateTime<Utc>,
}

/// How much of a rejected payload a row shows.
const PREVIEW_CHARS: usize = 300;

/// The dead letters, newest first.
pub(super) fn rejected(view: &RejectedView<'_>) -> Markup {
    let body = html! {
        section.panel {
            h1 { "Rejected events" }
            p.muted { "Messages a source plugin could not turn into a fault event, kept as they arrived." }
            @if view.rows.is_empty() {
                p.empty { "Nothing was rejected." }
            } @else {
                table {
                    thead { tr { th { "Received" } th { "Source" } th { "Cluster" } th { "Reason" } th { "Payload" } } }
                    tbody {
                        @for row in view.rows {
                            @let preview: String = String::from_utf8_lossy(&row.raw_payload).chars().take(PREVIEW_CHARS).collect();
                            tr {
                                td data-label="Received" { (when(row.received_at, view.now)) }
                                td data-label="Source" { (row.source) }
                                td data-label="Cluster" { (row.cluster.as_deref().unwrap_or("")) }
                                td data-label="Reason" { span.problem { (row.reason) } }
                                td data-label="Payload" { code.payload { (preview) } span.muted { " " (row.raw_payload.len()) " bytes" } }
                            }
                        }
                    }
                }
            }
            nav.pager {
                @if view.paged { a.button.secondary href="/rejected" { "← Newest" } }
                @if let Some(next) = &view.next_link { a.button.secondary rel="next" href=(next) { "Older →" } }
            }
        }
    };
    layout("Rejected events", Some(view.viewer), Nav::Rejected, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_from_outside_is_escaped() {
        let page = error(
            None,
            "<script>alert(1)</script>",
            "\"><img src=x onerror=alert(2)>",
        )
        .into_string();
        assert!(!page.contains("<script>alert"), "{page}");
        assert!(!page.contains("<img"), "{page}");
        assert!(
            page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{page}"
        );
        // the page's own script is the file, never inline
        assert!(
            page.contains("<script src=\"/assets/app.js\" defer></script>"),
            "{page}"
        );
    }

    #[test]
    fn class_words_and_times_are_plain() {
        assert_eq!(word("critical\" onclick=\"x"), "criticalonclickx");
        let now = Utc::now();
        assert_eq!(ago(now - chrono::Duration::seconds(90), now), "1m ago");
        assert_eq!(ago(now - chrono::Duration::hours(26), now), "1d 2h ago");
    }
}
