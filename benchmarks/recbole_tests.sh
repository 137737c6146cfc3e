#!/usr/bin/env bash
# RecBole v1.2.1's own tests against the installed recbole, with and without recbole_tru's
# compatibility layer (docs/compatibility.md, "Checked against RecBole's own tests").
# Not part of CI: it needs a RecBole checkout, e.g.
#   git clone --branch v1.2.1 --depth 1 https://github.com/RUCAIBox/RecBole.git
# Usage: benchmarks/recbole_tests.sh RECBOLE_CHECKOUT [with|without|both]   (default: both)
# PYTHON (default: python) is the interpreter with recbole 1.2.1 and recbole-tru installed.
# Exit status: that of the run with the layer (the run without it is expected to fail).
set -euo pipefail
checkout=${1:?usage: $0 RECBOLE_CHECKOUT [with|without|both]}
mode=${2:-both}
python=${PYTHON:-python}
[ -d "$checkout/tests/test_data" ] || { echo "$checkout/tests/test_data missing: not a RecBole checkout" >&2; exit 2; }
version=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$checkout/recbole/__init__.py")
[ "$version" = "1.2.1" ] || echo "warning: the checkout is RecBole $version, not 1.2.1" >&2
"$python" -c 'import recbole, sys; print("installed recbole", recbole.__version__, "python", sys.version.split()[0])'

# The tests are copied out of the checkout, so that `import recbole` is the installed package.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$checkout/tests" "$work/tests"
cat > "$work/conftest.py" <<'EOF'
# Apply recbole_tru's compatibility layer before RecBole's tests are collected.
import recbole_tru  # noqa: F401  (importing the package applies recbole_tru.compat)
EOF

M=tests/model/test_model_auto.py::TestGeneralRecommender
selection=(tests/metrics tests/data tests/config/test_config.py tests/evaluation_setting
           "$M::test_bpr" "$M::test_neumf" "$M::test_lightgcn" "$M::test_itemknn" "$M::test_userknn")
pytest_in_work() { (cd "$work" && "$python" -m pytest -q -p no:cacheprovider --disable-warnings "$@" "${selection[@]}"); }

rc=0
if [ "$mode" = without ] || [ "$mode" = both ]; then
    echo "== without the layer (--noconftest)"
    pytest_in_work --noconftest --continue-on-collection-errors --tb=no -rfE || true
fi
if [ "$mode" = with ] || [ "$mode" = both ]; then
    echo "== with the layer (conftest.py imports recbole_tru)"
    pytest_in_work --tb=short -rfE || rc=$?
fi
exit "$rc"
