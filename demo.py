#!/usr/bin/env python
"""`make demo`: the whole study on a synthetic phantom. DEMO_SCALE=full uses the original study's settings."""
import os

from utils.errors import cli


@cli
def main():
    from utils.pipelines.demo import run_demo
    run_demo(os.environ.get("DEMO_SCALE", "cpu"))


if __name__ == "__main__":
    main()
