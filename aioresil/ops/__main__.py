"""``python -m aioresil.ops``: print where the shipped alert rules and dashboard are."""

from __future__ import annotations

from . import ASSETS, asset_path

for name in ASSETS:
    print(asset_path(name))
