"""The ``sycam`` command line: ``sycam --help`` lists the sub-commands."""
from __future__ import annotations

import argparse
import sys

from .commands import ablate, check, data, explain, layers, metrics, search, seeds
from .commands import eval as eval_command
from .errors import SycamError

COMMANDS = [explain, eval_command, search, ablate, seeds, check, layers, metrics, data]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sycam", description="Synthesise, evaluate and ablate Class Activation Maps.")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.add(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if not getattr(args, "run", None):
        parser().print_help()
        return 2
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        return args.run(args)
    except SycamError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
