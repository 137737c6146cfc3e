"""Command line of recbole-tru, like RecBole's run_recbole.py.

    python run_recbole_tru.py --model=VBPR
    python run_recbole_tru.py --model=MMGCN --unlearn=tru
    python run_recbole_tru.py --model=VBPR --dataset=ml-100k-mm --config_files="a.yaml b.yaml" --learning_rate=0.01

Any other ``--key=value`` is a RecBole/recbole-tru config override (highest precedence).
"""
import argparse

from recbole_tru.quick_start import run_recbole_tru


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", "-m", type=str, required=True, help="VBPR, MMGCN, or any RecBole model (BPR, LightGCN, ...)")
    parser.add_argument("--dataset", "-d", type=str, default=None, help="data set name (default: ml-100k-mm)")
    parser.add_argument("--config_files", type=str, default=None, help="space-separated YAML files")
    parser.add_argument("--unlearn", type=str, default=None,
                        help="unlearning method(s): retrain, finetune, gradascent, reverse, tru; comma list or all")
    args, _ = parser.parse_known_args()
    files = args.config_files.strip().split(" ") if args.config_files else None
    config_dict = {"unlearn": args.unlearn} if args.unlearn else None
    run_recbole_tru(model=args.model, dataset=args.dataset, config_file_list=files, config_dict=config_dict)


if __name__ == "__main__":
    main()
