#!/usr/bin/env bash
# The GPU check in one command, for a machine that has this working tree and nothing else:
#
#     bash benchmarks/device_check.sh --out "$OUT"        # every argument goes to device_check.py
#
# It installs nothing into the system. It picks the first Python that imports torch (of
# $VRNNKIT_PYTHON, python3, python), prints what it found (Python, PyTorch, CUDA, the GPU), and
# runs benchmarks/device_check.py with this tree's src/ on PYTHONPATH, so the vrnnkit that runs
# is this tree's. A CUDA build of PyTorch must already be on the machine: it cannot travel with
# the tree (the wheel is far larger than what a device run carries), and a .venv made on a CPU
# machine holds a CPU build, which sees no GPU; device_check.py then stops at once with exit 2
# and says so in its JSON. Wheels of missing pure-Python packages (typer, rich, safetensors, ...)
# may travel in a folder, $WHEELS (default .whl/): they are unpacked into a scratch folder with
# pip --no-index --no-deps --target and put on PYTHONPATH, nothing else touched.
set -u
cd "$(dirname "$0")/.." || exit 2

PY=""
FIRST=""
for candidate in ${VRNNKIT_PYTHON:-} python3 python; do
    command -v "$candidate" >/dev/null 2>&1 || continue
    FIRST=${FIRST:-$candidate}
    if "$candidate" -c "import torch" >/dev/null 2>&1; then
        PY=$candidate
        break
    fi
done
if [ -z "$FIRST" ]; then
    echo "device_check.sh: no Python found (tried: ${VRNNKIT_PYTHON:-} python3 python)" >&2
    exit 2
fi
if [ -z "$PY" ]; then
    echo "device_check.sh: no Python here imports torch; running with $FIRST so that the JSON records it." >&2
    echo "device_check.sh: the GPU machine needs a CUDA build of PyTorch (a .venv carried from a CPU machine will not do)." >&2
    PY=$FIRST
fi

WHEELS=${WHEELS:-.whl}
if compgen -G "$WHEELS/*.whl" >/dev/null; then
    SITE=$(mktemp -d /tmp/vrnnkit-device-site.XXXXXX)
    echo "device_check.sh: unpacking the wheels of $WHEELS into $SITE"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "$WHEELS"/*.whl \
        || echo "device_check.sh: pip could not unpack $WHEELS (going on without them)" >&2
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

echo "device_check.sh: $(command -v "$PY")"
"$PY" - <<'EOF'
import sys
print(f"  python {sys.version.split()[0]} at {sys.executable}")
try:
    import torch
except Exception as error:
    print(f"  torch: cannot be imported ({type(error).__name__}: {error})")
else:
    cuda = torch.cuda.is_available()
    print(f"  torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}, CUDA available: {cuda}")
    for index in range(torch.cuda.device_count() if cuda else 0):
        print(f"  cuda:{index} {torch.cuda.get_device_name(index)}")
EOF
exec "$PY" benchmarks/device_check.py "$@"
