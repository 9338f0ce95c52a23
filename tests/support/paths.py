"""Where the checkout's parts are, for tests (the package itself finds nothing through the checkout)."""

from __future__ import annotations

from pathlib import Path

from tools import settings

PROJECT_ROOT = Path(__file__).resolve().parents[2]
REPOSITORY = PROJECT_ROOT / settings.MODEL_REPOSITORY
CHART = PROJECT_ROOT / settings.CHART_DIR
CHART_DASHBOARDS = CHART / settings.CHART_DASHBOARDS_SUBDIR
CHART_RULES = CHART / settings.CHART_RULES_SUBDIR
SCRIPTS = PROJECT_ROOT / "scripts"
