"""Operations assets shipped with aioresil: Prometheus alert rules and a Grafana dashboard.

Both are package data, so they match the installed version's metric names:

* ``alerts.yml``: alerting rules (circuit open for over a minute, forced open, dead letters at
  the exported warning/critical thresholds, lost or spooled dead letters, backend down, no
  scrape). ``promtool check rules`` passes; ``tests/test_ops_assets.py`` fires one in a
  real Prometheus scraping ``aioresil serve``.
* ``grafana-dashboard.json``: breaker states over time, call rates by outcome, failure and
  slow-call rates, latency quantiles from the call-duration histogram, DLQ size against its
  thresholds, oldest entry age, lost/spooled entries, backends up. Import it in Grafana and
  pick your Prometheus data source.

``python -m aioresil.ops`` prints where they are installed.

Example::

    from aioresil.ops import asset_path

    rules = asset_path("alerts.yml").read_text()
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

__all__ = ["ASSETS", "asset_path"]

ASSETS = ("alerts.yml", "grafana-dashboard.json")


def asset_path(name: str) -> Path:
    """The installed file ``name`` (one of :data:`ASSETS`).

    Raises:
        ValueError: ``name`` is not one of the shipped assets.
    """
    if name not in ASSETS:
        raise ValueError(f"no ops asset {name!r}; the assets are {', '.join(ASSETS)}")
    return Path(str(files(__name__).joinpath(name)))
