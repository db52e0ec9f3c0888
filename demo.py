#!/usr/bin/env python
"""`make demo`: the whole study on a synthetic phantom, on CPU, in minutes.

A run writes only the generated folders dataset/, data/, runs/, weights/, logs/ and
results/ (the report is results/demo/report.md); the tracked README.md and docs/ are left
alone. `make readme-demo` (this script with --update_readme) also refreshes the README's
demo block and docs/demo_overlay.png.

Examples:
  python demo.py                              # the CPU demo
  python demo.py --scale full                 # the original study's settings (a GPU)
  python demo.py --update_readme              # run, then refresh the README's demo block
  python demo.py --update_readme --no_run     # refresh it from the last run in results/demo
"""
import argparse
import os

from utils.errors import cli


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", default=os.environ.get("DEMO_SCALE", "cpu"), choices=("cpu", "full"),
                   help="cpu (default; minutes on 2 cores) or full (the original study's settings); "
                        "default: $DEMO_SCALE, else cpu")
    p.add_argument("--update_readme", action="store_true",
                   help="refresh README.md's demo block and docs/demo_overlay.png from the run")
    p.add_argument("--no_run", action="store_true",
                   help="with --update_readme: use the last finished run in results/demo, do not run")
    return p.parse_args(argv)


@cli
def main(argv=None):
    a = parse_args(argv)
    from utils.errors import UserError
    from utils.pipelines.demo import run_demo, update_readme
    if a.no_run:
        if not a.update_readme:
            raise UserError("--no_run only goes with --update_readme")
        print(f"README demo block refreshed: {update_readme()}")
        return
    run_demo(a.scale, update_readme_block=a.update_readme)


if __name__ == "__main__":
    main()
