"""`python -m jobs_core renderers`: each renderer, its render types, and whether it can run here."""
from __future__ import annotations

import argparse
import json
import os
from typing import Any

from . import get_renderer, renderer_names


def describe_renderers() -> list[dict[str, Any]]:
    """One entry per registered renderer, configuration read from this process's environment."""
    default = os.environ.get("JOBS_RENDERER") or "axonometric"
    rows = []
    for name in renderer_names():
        renderer = get_renderer(name)
        problem = renderer.configuration_problem()
        rows.append({"name": name, "description": renderer.description, "renderTypes": list(renderer.render_types),
                     "configured": problem is None, "problem": problem, "default": name == default})
    return rows


def cmd_renderers(args: argparse.Namespace, service: object = None) -> int:
    rows = describe_renderers()
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    table = [("RENDERER", "RENDER TYPES", "STATUS")]
    for row in rows:
        status = "configured" if row["configured"] else f"not configured: {row['problem']}"
        table.append((row["name"] + (" *" if row["default"] else ""), ", ".join(row["renderTypes"]), status))
    widths = [max(len(line[i]) for line in table) for i in range(2)]
    for name, types, status in table:
        print(f"{name.ljust(widths[0])}  {types.ljust(widths[1])}  {status}")
    print("* the default for new jobs (JOBS_RENDERER)")
    return 0
