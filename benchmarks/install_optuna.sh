#!/usr/bin/env bash
# What Optuna adds to an install: seconds, packages, download and installed size.
#
#     bash benchmarks/install_optuna.sh > docs/cpu/install_optuna.txt
#
# A fresh venv first gets what the rest of the install brings anyway (numpy, pyyaml, tqdm, packaging,
# typing-extensions); then `pip install optuna` is timed alone, so the figure is Optuna's own share. Run it twice
# and read the second round: the first may fill pip's cache, and a user's install reads from the registry or a cache.
set -euo pipefail
version=${OPTUNA_VERSION:-5.1.0}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
. "$work/venv/bin/activate"
pip install -q numpy pyyaml tqdm packaging typing-extensions
site=$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
before=$(du -sk "$site" | cut -f1)
listed=$(pip list --format=freeze | sort)
pip download -q --no-deps -d "$work/wheels" "optuna==$version" sqlalchemy alembic mako colorlog markupsafe
t0=$(date +%s.%N)
pip install -q "optuna==$version"
t1=$(date +%s.%N)
after=$(du -sk "$site" | cut -f1)
echo "optuna $version on $(python -V 2>&1), $(uname -m), $(nproc) cores"
echo "pip install optuna: $(python -c "print(f'{$t1 - $t0:.1f}')") s"
echo "packages added: $(comm -13 <(echo "$listed") <(pip list --format=freeze | sort) | tr '\n' ' ')"
echo "wheels of those packages: $(du -ck "$work"/wheels/* | tail -1 | cut -f1) KiB"
echo "installed: $(( (after - before) / 1024 )) MiB"
