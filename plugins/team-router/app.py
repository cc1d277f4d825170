"""team-router: a pre-triage plugin in Python (componentize-py) that labels incidents with the owning team.

Config (`[plugins.plugin.team-router.config]`):
    teams = { "shop" = "payments", "kube-*" = "platform" }   # namespace (trailing * allowed) -> team
    default_team = "unowned"
    critical_priority = 200                                    # priority given to critical faults
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports.pre_triage_processor import Decision_Proceed, Patch
from wit_world.imports import host
from wit_world.imports.types import Capabilities, PluginError, PluginInfo, Severity


def team_for(teams, namespace, default):
    if namespace in teams:
        return teams[namespace]
    for pattern, team in teams.items():
        if pattern.endswith("*") and namespace.startswith(pattern[:-1]):
            return team
    return default


_config = None


def config():
    # The operator's config is fixed for the life of the instance, and instances are reused: parse it once.
    global _config
    if _config is None:
        try:
            _config = json.loads(host.get_config())
        except ValueError as error:
            raise Err(PluginError(message=f"invalid plugin config: {error}", retryable=False))
    return _config


class PreTriageProcessor(exports.PreTriageProcessor):
    def describe(self) -> PluginInfo:
        return PluginInfo(
            name="team-router",
            version="0.1.0",
            description="Labels incidents with the team owning their namespace (Python example)",
            capabilities=Capabilities(outbound_hosts=[], env_vars=[], read_only_dirs=[]),
        )

    def pre_triage(self, incident) -> Decision_Proceed:
        settings = config()
        teams = settings.get("teams", {})
        namespace = incident.event.resource.namespace or ""
        team = team_for(teams, namespace, settings.get("default_team", "unowned"))
        priority = None
        if incident.event.severity == Severity.CRITICAL:
            priority = int(settings.get("critical_priority", 200))
        host.log(host.Level.DEBUG, "routed incident", [("incident", incident.id), ("team", team)])
        return Decision_Proceed(
            Patch(
                labels=[("team", team)],
                annotations=[("team-router.nightcrier.io/namespace", namespace)],
                priority=priority,
                agent_profile=None,
                context_files=[],
            )
        )
