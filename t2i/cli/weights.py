"""`python -m t2i presets` (which presets exist, whether their weights are here) and `download`."""

from __future__ import annotations


def add_presets(sub) -> None:
    p = sub.add_parser("presets", help="list presets and whether their weights are present")
    p.set_defaults(func=cmd_presets)


def cmd_presets(args) -> int:
    from ..assets.weights import download_command, missing_files
    from ..presets import all_presets

    for name, p in all_presets().items():
        missing = missing_files(p)
        state = "random weights (untrained)" if p.untrained else \
            ("weights present" if not missing else f"weights missing ({len(missing)} files): {download_command(name)}")
        print(f"{name}\n    {p.description}\n    models: {p.models_label}\n    {state}")
    return 0


def add_download(sub) -> None:
    d = sub.add_parser("download", help="fetch weights into checkpoints/ and prove they load")
    d.add_argument("names", nargs="+", metavar="NAME", help="a preset or a weights entry (configs/weights.yaml)")
    d.add_argument("--quiet", action="store_true")
    d.set_defaults(func=cmd_download)


def cmd_download(args) -> int:
    from ..assets.install import download

    for name in args.names:
        for line in download(name, progress=not args.quiet):
            print(line)
    return 0
