"""Command line of recbole-tru, like RecBole's run_recbole.py (run from the repository root;
an installed package has the same command as the console script ``run_recbole_tru``).

    python run_recbole_tru.py --model=VBPR
    python run_recbole_tru.py --model=MMGCN --unlearn=tru
    python run_recbole_tru.py --model=VBPR --dataset=ml-100k-mm --config_files="a.yaml b.yaml" --learning_rate=0.01
    python run_recbole_tru.py --model=MMGCN --unlearn=tru --checkpoint=PATH --forget_file=REQUEST

Any other ``--key=value`` is a RecBole/recbole-tru config override (highest precedence).
"""
from recbole_tru.cli import main

if __name__ == "__main__":
    main()
