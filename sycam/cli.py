"""The ``sycam`` command line: ``sycam --help`` lists the sub-commands.

Start-up is kept short: the command modules import torch, sympy, optuna and matplotlib inside
the functions that run a command, so ``--help``, ``--version``, ``seeds`` and ``metrics`` never
load them (``benchmarks/startup.py`` measures it; ``tests/test_startup.py`` checks it).
"""
from __future__ import annotations

import argparse
import sys

from . import __version__
from .commands import ablate, check, data, explain, layers, metrics, search, seeds
from .commands import eval as eval_command
from .commands.common import resolve_device
from .errors import SycamError

COMMANDS = [explain, eval_command, search, ablate, seeds, check, layers, metrics, data]


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's help ends with its default, except where there is none to show
    (None: the help says what happens; False: a flag)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False or action.default == []:
            return action.help
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """An ArgumentParser with :class:`HelpFormatter`; sub-parsers (``add_subparsers``) inherit the class."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="sycam", description="Synthesise, evaluate and ablate Class Activation Maps.",
               epilog="`sycam COMMAND --help` describes a command and its options.")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own choice)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.add(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    cli = parser()
    args = cli.parse_args(argv)
    if not getattr(args, "run", None):
        cli.print_help()
        return 2
    try:
        if args.threads:
            import torch  # deferred: only --threads needs torch here; commands without it may never load it

            torch.set_num_threads(args.threads)
        resolve_device(args)            # --device auto -> cuda or cpu, others checked (torch: model commands only)
        return args.run(args)
    except (SycamError, OSError) as err:   # OSError: last line of defence, a file the commands did not check
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
