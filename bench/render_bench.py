"""Embedded renderer timing: each render type at 1024 and 2048 px, median of several runs.

    python3 bench/render_bench.py [--runs 7] [--docs docs]

Prints one row per (brief, render type, size) beside the target (<= 250 ms at 1024 px), and with
--docs writes the sample brief's drawings as docs/render-<type>.png for the README.
The time is the whole render (validate, massing, facades, shading, encoding) as a worker runs it.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jobs_core.renderers import RenderTask, get_renderer  # noqa: E402
from jobs_core.renderers.axonometric import RENDER_TYPES  # noqa: E402

TARGET_MS = 250.0
SAMPLE = {  # the README's brief
    "title": "Harbour Library", "description": "A public library around a garden court, facing the quay.",
    "buildingType": "cultural", "footprint": "U", "width": 48, "depth": 34, "floors": 4, "floorHeight": 4.0,
    "roof": "gable", "material": "brick", "palette": "warm", "windowRatio": 0.45,
}
HEAVY = {  # many floors and wings: the most facade the drawing engine meets in practice
    "title": "Tower block", "footprint": "courtyard", "width": 120, "depth": 90, "floors": 40,
    "roof": "sawtooth", "material": "timber", "palette": "cool",
}


def time_render(brief: dict, render_type: str, size: int, runs: int) -> tuple[float, float, int]:
    """Median wall-clock ms, median CPU ms (fairer on a busy machine), PNG bytes."""
    renderer = get_renderer("axonometric")
    task = RenderTask("bench", "harbour", render_type, brief, size)
    renderer.render(task, lambda percent, stage: None)  # warm: fonts, imports
    wall, cpu = [], []
    for _ in range(runs):
        started, started_cpu = time.perf_counter(), time.process_time()
        png = renderer.render(task, lambda percent, stage: None).png
        wall.append((time.perf_counter() - started) * 1000)
        cpu.append((time.process_time() - started_cpu) * 1000)
    return statistics.median(wall), statistics.median(cpu), len(png)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--docs", help="write the sample brief's drawings into this folder")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; {args.runs} runs per row")
    header = ("brief", "render type", "size", "wall ms", "cpu ms", "target", "PNG KB")
    print(f"{header[0]:<7} {header[1]:<21} {header[2]:>5} {header[3]:>8} {header[4]:>7} {header[5]:>7} "
          f"{header[6]:>7}  verdict")
    for label, brief in (("sample", SAMPLE), ("heavy", HEAVY)):
        for render_type in RENDER_TYPES:
            for size in (1024, 2048):
                wall, cpu, length = time_render(brief, render_type, size, args.runs)
                target = f"{TARGET_MS:.0f}" if size == 1024 else "-"
                verdict = ("ok" if wall <= TARGET_MS else "over") if size == 1024 else ""
                print(f"{label:<7} {render_type:<21} {size:>5} {wall:>8.1f} {cpu:>7.1f} {target:>7} "
                      f"{length / 1024:>7.0f}  {verdict}")
    if args.docs:
        folder = Path(args.docs)
        folder.mkdir(parents=True, exist_ok=True)
        for render_type in RENDER_TYPES:
            task = RenderTask("docs", "harbour", render_type, SAMPLE, 1024)
            (folder / f"render-{render_type}.png").write_bytes(
                get_renderer("axonometric").render(task, lambda percent, stage: None).png)
        print(f"wrote {len(RENDER_TYPES)} drawings to {folder}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
