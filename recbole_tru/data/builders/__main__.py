"""Command line: ``python -m recbole_tru.data.builders {ml100k,text,mmrec,synthetic} ...``.

Examples::

    python -m recbole_tru.data.builders ml100k
    python -m recbole_tru.data.builders text dataset/my-set my-set --fields title description
    python -m recbole_tru.data.builders mmrec /data/mmrec/baby --out dataset
    python -m recbole_tru.data.builders synthetic --size baby      # SYNTHETIC, into benchmarks/data
"""
import argparse
import sys
from pathlib import Path


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m recbole_tru.data.builders",
                                     description="Build multimodal RecBole data sets.")
    commands = parser.add_subparsers(dest="command", required=True)

    ml = commands.add_parser("ml100k", help="build dataset/ml-100k-mm from recbole's bundled ml-100k")
    ml.add_argument("--out", type=Path, default=None, help="output folder (default: <repo>/dataset/ml-100k-mm)")
    ml.add_argument("--batch-size", type=int, default=64)

    text = commands.add_parser("text", help="write a text modality from a data set's .item file")
    text.add_argument("data_dir", type=Path, help="the data set folder holding <dataset>.item")
    text.add_argument("dataset", help="data set name")
    text.add_argument("--fields", nargs="+", default=None,
                      help="text fields to embed (default: every token/token_seq field but the item id)")
    text.add_argument("--suffix", default="textfeat")
    text.add_argument("--modality", default="text")

    mm = commands.add_parser("mmrec", help="import an MMRec-format data set folder")
    mm.add_argument("src", type=Path, help="MMRec folder with <name>.inter, image_feat.npy, text_feat.npy")
    mm.add_argument("--out", type=Path, required=True, help="parent folder of the output data set folder")
    mm.add_argument("--name", default=None, help="data set name (default: the folder name of src)")
    mm.add_argument("--keep-cold-start-users", action="store_true",
                    help="keep valid/test rows of users with no train row (MMRec drops them)")

    syn = commands.add_parser("synthetic", help="write a SYNTHETIC data set with Amazon Baby/Sports/Clothing counts")
    syn.add_argument("--size", default="baby", choices=["tiny", "baby", "sports", "clothing"])
    syn.add_argument("--out", type=Path, default=None,
                     help="parent folder of the data set folder (default: <repo>/benchmarks/data, git-ignored)")
    syn.add_argument("--seed", type=int, default=None, help="generator seed (default 2026)")
    syn.add_argument("--name", default=None, help="data set name (default: synthetic-<size>)")
    return parser.parse_args(argv)


def run(args):
    """Build what ``args`` asks for; returns {kind: written Path}."""
    if args.command == "ml100k":
        from recbole_tru.data.builders.ml100k import DEFAULT_OUT, build_ml100k
        return build_ml100k(args.out or DEFAULT_OUT, batch_size=args.batch_size)
    if args.command == "text":
        from recbole_tru.data.builders.text_features import build_text_features
        return {args.modality: build_text_features(args.data_dir, args.dataset, args.fields,
                                                   args.suffix, args.modality)}
    if args.command == "synthetic":
        from recbole_tru.data.builders.synthetic import build_synthetic
        command = f"python -m recbole_tru.data.builders synthetic --size {args.size}" + (
            f" --seed {args.seed}" if args.seed is not None else "")
        return build_synthetic(args.size, args.out, args.seed, args.name, command=command)
    from recbole_tru.data.builders.mmrec import import_mmrec
    return import_mmrec(args.src, args.out, args.name,
                        drop_cold_start_users=not args.keep_cold_start_users)


def main(argv=None):
    args = parse_args(argv)
    try:
        written = run(args)
    except (ValueError, OSError, ImportError) as err:
        sys.exit(f"error: {err}")
    for path in written.values():
        print(f"{path}\t{path.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
