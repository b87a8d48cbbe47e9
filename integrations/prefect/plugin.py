"""Prefect's startup plugin for the bridge (entry point `assetlog` in the `prefect.plugins` group).

Prefect imports this module while `import prefect` runs, when `PREFECT_PLUGINS_ENABLED`
is true and the plugin is allowed (`PREFECT_PLUGINS_ALLOW` / `PREFECT_PLUGINS_DENY`).
Importing it changes nothing: the bridge is installed by the startup hook only, so
Prefect's safe mode (`PREFECT_PLUGINS_SAFE_MODE`, which loads plugins but calls no
hook) leaves it off. The hook sets no environment variable.
"""

from __future__ import annotations

from typing import Any

from prefect.plugins import register_hook

# The plugin API versions of Prefect's startup hooks this module implements.
PREFECT_PLUGIN_API_REQUIRES = ">=0.1,<1"


@register_hook
def setup_environment(*, ctx: Any) -> None:
    # deferred: prefect (the optional extra) imports this module inside `import prefect`; the bridge's
    # producer modules (confluent_kafka, fastavro) load only when this hook installs it, not in safe mode
    from assetlog.integrations.prefect.bridge import install

    logger = ctx.logger_factory("assetlog")
    try:
        if install():
            logger.debug("Assetlog bridge on: asset events are also published to Assetlog")
    except Exception:  # never stop Prefect from starting
        logger.exception("Assetlog bridge: could not be installed; Prefect runs without it")
    return None
