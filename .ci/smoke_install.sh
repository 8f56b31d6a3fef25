#!/usr/bin/env bash
# imgcls installed the way a user installs it, then used from outside the checkout: a fresh venv gets the pinned CPU
# torch first (requirements.txt; a bare "torch" would pull a CUDA build), then the wheel that pip builds with its
# default build isolation. Checks: the wheel holds the native reader, the kernels and the package data; torch is left
# as it was; the reader imports; 57 models; the kernels resolve inside the package and nothing named kernels sits at
# the top of site-packages; one epoch of training on the built-in data with the native reader; a prediction with the
# checkpoint it wrote. Triton (640 MB) stays out of this venv: the kernels' own tests run in .venv. Run by .ci/run.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/imgcls-install.XXXXXX")
trap 'rm -rf "$work"' EXIT
say() { echo "smoke_install [${SECONDS}s]: $*"; }
fail() { echo "smoke_install: FAILED: $*" >&2; exit 1; }

"${PYTHON:-python3}" -m venv "$work/venv"
py=$work/venv/bin/python
pip=("$py" -m pip -q --disable-pip-version-check)
mapfile -t pins < <(grep -E '^(torch|numpy)[=<>]' "$repo/requirements.txt")
say "fresh venv with ${pins[*]}"
"${pip[@]}" install "${pins[@]}"
torch_before=$("$py" -c "import torch; print(torch.__version__)")

say "building the wheel (default build isolation)"
"${pip[@]}" wheel --no-deps -w "$work/dist" "$repo"
wheel=$(ls "$work"/dist/imgcls-*.whl)
"$py" - "$wheel" <<'EOF' || fail "the wheel lacks files imgcls needs at run time"
import re, sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
wanted = [r"imgcls/_reader\..*\.so", r"imgcls/kernels/dwconv_bn_act\.py", r"imgcls/data/imagenet_labels\.txt"]
missing = [w for w in wanted if not any(re.fullmatch(w, n) for n in names)]
stray = sorted({n.split("/")[0] for n in names if not n.startswith("imgcls/") and ".dist-info/" not in n})
for problem in [f"missing {m}" for m in missing] + [f"top-level {s} besides imgcls" for s in stray]:
    print(problem)
sys.exit(1 if missing or stray else 0)
EOF

say "installing $(basename "$wheel")"
"${pip[@]}" install "$wheel"
torch_after=$("$py" -c "import torch; print(torch.__version__)")
[ "$torch_before" = "$torch_after" ] || fail "installing imgcls replaced torch $torch_before with $torch_after"

cd "$work"  # outside the checkout: only the installed package can answer
site=$("$py" -c "import sysconfig; print(sysconfig.get_paths()['platlib'])")
if ls -d "$site"/kernels* 2>/dev/null; then fail "something named kernels at the top level of $site"; fi
count=$("$py" -c "
import importlib.util, imgcls, imgcls._reader, imgcls.models
for module in (imgcls, imgcls._reader):
    assert module.__file__.startswith('$site'), module.__file__
kernel = importlib.util.find_spec('imgcls.kernels.dwconv_bn_act').origin
assert kernel == '$site/imgcls/kernels/dwconv_bn_act.py', kernel
print(len(imgcls.models.list_models()))")
[ "$count" = 57 ] || fail "$count models registered, expected 57"
say "native reader imports, $count models"

say "one epoch of ShuffleNetV2_x0_25 on the built-in data"
"$py" -m imgcls.train --model ShuffleNetV2_x0_25 --num_epochs 1 --reader native --model_save_dir "$work/out" \
  > "$work/train.log" 2>&1 || { tail -20 "$work/train.log"; fail "training"; }
tail -2 "$work/train.log"
mapfile -t images < <("$py" -c "
from imgcls.data.builtin import builtin_dataset_dir
root = builtin_dataset_dir()
for line in (root / 'val_list.txt').read_text().splitlines()[:4]:
    print(root / line.split()[0])")
"$py" -m imgcls.infer --model ShuffleNetV2_x0_25 --pretrained_model "$work/out/ShuffleNetV2_x0_25/0" --topk 2 \
  --image "${images[@]}" > "$work/infer.log" 2>&1 || { tail -20 "$work/infer.log"; fail "inference"; }
predicted=$(grep -c -F -f <(printf '%s:\n' "${images[@]}") "$work/infer.log" || true)
[ "$predicted" = "${#images[@]}" ] || { cat "$work/infer.log"; fail "infer printed $predicted of ${#images[@]} predictions"; }
say "ok: wheel built, installed beside torch $torch_after, used from $work"
