"""``python -m training --config include/configs/optimized.yaml [--set training.epochs=1 ...]``"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from training.config import ConfigError, load_config

EXIT_INTERRUPTED = 143  # 128 + SIGTERM, as a shell reports a process ended by it


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    parser.add_argument("--config", required=True, help="YAML config (see include/configs/)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set training.epochs=1 (repeatable)")
    parser.add_argument("--print-summary", action="store_true",
                        help="print summary.json to stdout at the end")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stdout, force=True)
    log = logging.getLogger("training")
    try:
        config = load_config(args.config, args.overrides)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    from training.data import DataError
    from training.trainer import TrainingError, TrainingInterrupted, train

    try:
        summary = train(config)
    except TrainingInterrupted as error:
        log.warning("%s", error)
        return EXIT_INTERRUPTED
    except (TrainingError, DataError, ValueError) as error:
        log.error("%s", error)
        return 1
    if os.environ.get("RANK", "0") != "0":  # under torchrun: rank 0 reports, as it alone wrote the files
        return 0
    log.info("summary: %s", config.run_dir() / "summary.json")
    if args.print_summary:
        print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
