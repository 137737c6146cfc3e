"""Command line of recbole-tru, like RecBole's run_recbole.py. The console script
run_recbole_tru (installed with the package) and python run_recbole_tru.py (in the repository
root) are the same command.

    run_recbole_tru --model=VBPR
    run_recbole_tru --model=MMGCN --unlearn=tru
    run_recbole_tru --model=VBPR --dataset=ml-100k-mm --config_files="a.yaml b.yaml" --learning_rate=0.01
    run_recbole_tru --model=MMGCN --unlearn=tru --checkpoint=PATH --forget_file=REQUEST
    run_recbole_tru --model=MMGCN --checkpoint=PATH --recommend=users.txt --recommend_topk=20

Any other --key=value is a RecBole/recbole-tru config override (highest precedence).
Outputs (saved/, log/, outputs/) go to the working directory, as RecBole's do; the plugin's
properties/ and the embedded ml-100k-mm data set come with the package.
"""
import argparse

from recbole_tru.quick_start import run_recbole_tru
from recbole_tru.terminal import filter_known_warnings


def main():
    filter_known_warnings()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", "-m", type=str, required=True, help="VBPR, MMGCN, or any RecBole model (BPR, LightGCN, ...)")
    parser.add_argument("--dataset", "-d", type=str, default=None, help="data set name (default: ml-100k-mm)")
    parser.add_argument("--config_files", type=str, default=None, help="space-separated YAML files")
    parser.add_argument("--unlearn", type=str, default=None,
                        help="unlearning method(s): retrain, finetune, gradascent, reverse, tru, sisa, influence; comma list or all")
    parser.add_argument("--checkpoint", type=str, default=None,
                        help="deletion-request workflow: a trained checkpoint to unlearn from (never modified); "
                             "writes a new unlearned checkpoint and a report under output_dir")
    parser.add_argument("--forget_file", type=str, default=None,
                        help="deletion-request atomic file (user_id:token and/or item_id:token columns)")
    parser.add_argument("--recommend", type=str, default=None,
                        help="with --checkpoint: a users file (one user token per line); writes their top-K lists "
                             "(--recommend_topk, default 20) to --recommend_file or a new file under output_dir")
    args, _ = parser.parse_known_args()
    files = args.config_files.strip().split(" ") if args.config_files else None
    given = {"unlearn": args.unlearn, "checkpoint": args.checkpoint, "forget_file": args.forget_file,
             "recommend": args.recommend}
    config_dict = {k: v for k, v in given.items() if v} or None
    run_recbole_tru(model=args.model, dataset=args.dataset, config_file_list=files, config_dict=config_dict)


if __name__ == "__main__":
    main()
