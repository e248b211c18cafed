#!/usr/bin/env bash
# Install ComfyUI and the two custom node packs the graphs need at the pins of pins.env, install
# their Python requirements, then prove that every node class the stored graphs and fragments use
# registers.
#
#   bash comfy_bootstrap/install.sh                 # ComfyUI + VHS + essentials
#   bash comfy_bootstrap/install.sh sageattention   # optional: build SageAttention 2.2 (needs nvcc)
#   bash comfy_bootstrap/install.sh local DIR       # make comfyui: a venv with the pinned torch and all of
#                                                   # the above in DIR, every source checked first; a failed
#                                                   # run removes DIR, a finished one marks it DIR/.complete
#
# The Dockerfile runs it; it runs the same way on any Linux machine (or against local clones).
# Running it twice changes nothing and needs no network. It never installs or changes torch: install the pinned
# torch / torchvision / torchaudio / xformers first (the Dockerfile does; see docs/development.md).
#
# Environment (every key of pins.env can be overridden by a variable of the same name):
#   COMFY_DIR        where ComfyUI goes (default /comfyui); packs go to $COMFY_DIR/custom_nodes/
#   PYTHON           the Python that will run ComfyUI (default python3)
#   COMFYUI_REPO / COMFYUI_REF, VHS_REPO / VHS_REF, ESSENTIALS_REPO / ESSENTIALS_REF
#                    clone source (URL or local path) and commit, tag or branch of each repository
#   SKIP_PIP=1       install no Python package (tests, or an environment prepared by hand)
#   SKIP_VERIFY=1    skip the ComfyUI boot test and the node class check
#   WORKFLOWS        workflow files whose node classes must register (default: ../workflows/*.json
#                    and ../workflows/fragments/*.json next to this script)
#   PINS_FILE        the pins file (default: pins.env next to this script)
#   PYTHON3          (local) the Python that creates DIR/venv (default python3)
#   PIP_INDEX_URL    (local) the package index pip uses (default https://pypi.org/simple)
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PINS_FILE=${PINS_FILE:-$SCRIPT_DIR/pins.env}
COMFY_DIR=${COMFY_DIR:-/comfyui}
PYTHON=${PYTHON:-python3}
SKIP_PIP=${SKIP_PIP:-0}
SKIP_VERIFY=${SKIP_VERIFY:-0}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/wan22-install.XXXXXX")
# A local install being built: removed if the script ends before it is complete.
BUILDING=""
trap 'rm -rf "$WORK"; [ -z "$BUILDING" ] || { rm -rf "$BUILDING"; log "failed: removed the half-built $BUILDING (nothing is installed)"; }' EXIT

log() { printf 'install.sh: %s\n' "$*"; }
die() { printf 'install.sh: ERROR: %s\n' "$*" >&2; exit 1; }

# Read pins.env without letting it override what the caller set: env > pins.env.
load_pins() {
    local line key value
    [ -f "$PINS_FILE" ] || die "pins file not found: $PINS_FILE"
    while IFS= read -r line || [ -n "$line" ]; do
        case $line in '' | '#'*) continue ;; esac
        key=${line%%=*}
        value=${line#*=}
        value=${value#\"}
        value=${value%\"}
        [[ $key =~ ^[A-Z][A-Z0-9_]*$ ]] || die "$PINS_FILE: not a KEY=value line: $line"
        if [ -z "${!key+set}" ]; then
            printf -v "$key" '%s' "$value"
        fi
    done <"$PINS_FILE"
}

# checkout_pin LABEL PREFIX DEST: put repository ${PREFIX}_REPO into DEST at commit ${PREFIX}_REF.
checkout_pin() {
    local label=$1 prefix=$2 dest=$3 url ref commit="" unshallow=()
    local repo_var="${prefix}_REPO" ref_var="${prefix}_REF"
    url=${!repo_var:-}
    ref=${!ref_var:-}
    [ -n "$url" ] || die "$label: $repo_var is empty (set it in pins.env or the environment)"
    [ -n "$ref" ] || die "$label: $ref_var is empty (set it in pins.env or the environment)"

    if [ -d "$dest/.git" ]; then
        git -C "$dest" remote set-url origin "$url" 2>/dev/null || git -C "$dest" remote add origin "$url"
    else
        if [ -e "$dest" ] && [ -n "$(ls -A "$dest" 2>/dev/null)" ]; then
            die "$label: $dest exists and is not a git checkout; move it away or choose another COMFY_DIR"
        fi
        mkdir -p "$dest"
        git init -q "$dest"
        git -C "$dest" remote add origin "$url"
    fi

    # A full commit id that is already here needs no network (the second run).
    if [[ $ref =~ ^[0-9a-f]{40}$ ]]; then
        commit=$(git -C "$dest" rev-parse -q --verify "$ref^{commit}" 2>/dev/null) || commit=""
    fi
    if [ -z "$commit" ]; then
        if git -C "$dest" fetch -q --depth 1 origin "$ref" 2>/dev/null; then
            commit=$(git -C "$dest" rev-parse -q --verify 'FETCH_HEAD^{commit}')
        else
            # The server would not send this ref alone (an abbreviated id, or a host that does not
            # serve commits by id): fetch all branches and tags, then look the ref up.
            [ -f "$dest/.git/shallow" ] && unshallow=(--unshallow)
            git -C "$dest" fetch -q "${unshallow[@]}" --tags origin '+refs/heads/*:refs/remotes/origin/*' \
                || die "$label: cannot fetch $url (is $repo_var right, and is it reachable?)"
            commit=$(git -C "$dest" rev-parse -q --verify "$ref^{commit}" 2>/dev/null) \
                || commit=$(git -C "$dest" rev-parse -q --verify "origin/$ref^{commit}" 2>/dev/null) \
                || die "$label: pin $ref_var=$ref not found in $url (no such commit, tag or branch)"
        fi
    fi
    git -C "$dest" -c advice.detachedHead=false checkout -q --force --detach "$commit"
    log "$label: $dest at $commit"
}

pip_install() {
    "$PYTHON" -m pip install --disable-pip-version-check -c "$WORK/constraints.txt" "$@"
}

# Pin what is installed of torch & co. so no requirement file can swap the CUDA build for another.
write_constraints() {
    local hint="$PYTHON -m pip install --index-url $TORCH_INDEX_URL torch==$TORCH_VERSION \
torchvision==$TORCHVISION_VERSION torchaudio==$TORCHAUDIO_VERSION xformers==$XFORMERS_VERSION"
    "$PYTHON" - >"$WORK/constraints.txt" <<'PY' || die "torch is not installed in $PYTHON; install the pinned build first: $hint"
import importlib.metadata as md
import sys

try:
    md.version("torch")
except md.PackageNotFoundError:
    sys.exit(1)
for name in ("torch", "torchvision", "torchaudio", "xformers", "triton"):
    try:
        print(f"{name}=={md.version(name)}")
    except md.PackageNotFoundError:
        pass
PY
    log "keeping installed: $(tr '\n' ' ' <"$WORK/constraints.txt")"
}

# install_requirements FILE: pip-install a requirements file, with opencv-python -> headless.
install_requirements() {
    local file=$1 copy
    [ -f "$file" ] || { log "no requirements file at $file"; return 0; }
    copy="$WORK/req-$(basename "$(dirname "$file")").txt"
    # OpenCV with GUI support needs libGL, which the image does not have: use the headless build.
    sed -E 's/^([[:space:]]*)opencv-python([^-_.[:alnum:]]|$)/\1opencv-python-headless\2/' "$file" >"$copy"
    log "pip install -r $file"
    pip_install -r "$copy"
}

# A dependency may still pull a GUI OpenCV build; every build owns the cv2 package, so keep
# exactly one: opencv-python-headless.
ensure_headless_opencv() {
    local version name gui=()
    for name in opencv-python opencv-contrib-python; do
        "$PYTHON" -m pip show -q "$name" >/dev/null 2>&1 && gui+=("$name")
    done
    [ "${#gui[@]}" -gt 0 ] || return 0
    version=$("$PYTHON" -c 'import importlib.metadata as m; print(m.version("opencv-python-headless"))' 2>/dev/null) || version=""
    log "replacing ${gui[*]} (needs libGL) with opencv-python-headless${version:+ $version}"
    "$PYTHON" -m pip uninstall -y -q "${gui[@]}"
    pip_install --force-reinstall --no-deps "opencv-python-headless${version:+==$version}"
}

# Boot ComfyUI without a GPU, then check the workflow's node classes are registered.
verify_install() {
    local out=$WORK/quick-test.log workflow_args=() files=() f
    log "booting ComfyUI on the CPU: python main.py --cpu --quick-test-for-ci"
    # Its folders and database go to the scratch folder, so the checkout stays as cloned
    # (ComfyUI wants --user-directory to exist; its database default ignores --user-directory).
    mkdir -p "$WORK/user" "$WORK/input" "$WORK/output" "$WORK/temp"
    if ! (cd "$COMFY_DIR" && "$PYTHON" main.py --cpu --quick-test-for-ci \
        --user-directory "$WORK/user" --input-directory "$WORK/input" \
        --output-directory "$WORK/output" --temp-directory "$WORK/temp" \
        --database-url "sqlite:///:memory:") >"$out" 2>&1; then
        tail -n 40 "$out" >&2
        die "ComfyUI did not start (python main.py --cpu --quick-test-for-ci failed; its log is above)"
    fi
    if grep -q 'IMPORT FAILED' "$out"; then
        log "ComfyUI reported custom node packs that failed to import:"
        grep 'IMPORT FAILED' "$out" || true
    fi

    if [ -n "${WORKFLOWS:-}" ]; then
        read -r -a files <<<"$WORKFLOWS"
    else
        for f in "$SCRIPT_DIR"/../workflows/*.json "$SCRIPT_DIR"/../workflows/fragments/*.json; do
            [ -f "$f" ] && files+=("$f")
        done
    fi
    [ "${#files[@]}" -gt 0 ] || die "no workflow to check: set WORKFLOWS, or keep workflows/ next to comfy_bootstrap/"
    for f in "${files[@]}"; do workflow_args+=(--workflow "$f"); done
    "$PYTHON" "$SCRIPT_DIR/verify_nodes.py" --comfy-dir "$COMFY_DIR" "${workflow_args[@]}" \
        || die "the node classes listed above are missing: the workflow cannot run on this install"
}

install_comfyui() {
    checkout_pin "ComfyUI $COMFYUI_VERSION" COMFYUI "$COMFY_DIR"
    mkdir -p "$COMFY_DIR/custom_nodes"
    checkout_pin "ComfyUI-VideoHelperSuite" VHS "$COMFY_DIR/custom_nodes/ComfyUI-VideoHelperSuite"
    checkout_pin "ComfyUI_essentials" ESSENTIALS "$COMFY_DIR/custom_nodes/ComfyUI_essentials"

    if [ "$SKIP_PIP" = 1 ]; then
        log "SKIP_PIP=1: not installing Python requirements"
    else
        write_constraints
        # ComfyUI's own requirements bring comfyui-frontend-package and the rest at its versions.
        install_requirements "$COMFY_DIR/requirements.txt"
        install_requirements "$COMFY_DIR/custom_nodes/ComfyUI-VideoHelperSuite/requirements.txt"
        install_requirements "$COMFY_DIR/custom_nodes/ComfyUI_essentials/requirements.txt"
        ensure_headless_opencv
    fi

    if [ "$SKIP_VERIFY" = 1 ]; then
        log "SKIP_VERIFY=1: not checking the install"
    else
        verify_install
    fi
    log "done: ComfyUI $COMFYUI_VERSION in $COMFY_DIR"
}

# Optional: SageAttention 2.2 from source for the GPU architectures in TORCH_CUDA_ARCH_LIST.
install_sageattention() {
    local cuda_home=${CUDA_HOME:-/usr/local/cuda} src=$WORK/SageAttention
    [ "$SKIP_PIP" = 1 ] && { log "SKIP_PIP=1: not building SageAttention"; return 0; }
    [ -x "$cuda_home/bin/nvcc" ] || die "SageAttention is compiled from source and needs the CUDA compiler, \
but $cuda_home/bin/nvcc does not exist (the Dockerfile installs it when INSTALL_SAGEATTENTION=1; \
elsewhere install the CUDA toolkit of torch's CUDA version and set CUDA_HOME)"
    write_constraints
    checkout_pin "SageAttention" SAGEATTENTION "$src"
    pip_install ninja packaging setuptools wheel
    log "building SageAttention for TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST (10-30 minutes)"
    # -lcuda is resolved against the driver stub: a build machine has no GPU driver.
    (cd "$src" && TORCH_CUDA_ARCH_LIST="$TORCH_CUDA_ARCH_LIST" CUDA_HOME="$cuda_home" \
        LIBRARY_PATH="$cuda_home/lib64/stubs${LIBRARY_PATH:+:$LIBRARY_PATH}" \
        MAX_JOBS="${MAX_JOBS:-4}" EXT_PARALLEL="${EXT_PARALLEL:-1}" \
        "$PYTHON" -m pip install --disable-pip-version-check --no-build-isolation -c "$WORK/constraints.txt" .)
    # Importing it needs libcuda (a GPU host); here, check the package and its kernels are there.
    "$PYTHON" - <<'PY' || die "SageAttention did not install its compiled kernels"
import importlib.metadata as md
import sys

files = md.files("sageattention") or []
kernels = [str(f) for f in files if str(f).endswith(".so")]
print(f"install.sh: sageattention {md.version('sageattention')}: {len(kernels)} compiled modules")
sys.exit(0 if kernels else 1)
PY
}

# reachable LABEL VAR URL: empty output when URL answers (a git repository, an http(s) page, a local
# file or folder), else one line naming what cannot be reached and the variable that sets it.
reachable() {
    local label=$1 var=$2 url=$3
    case $url in
        http://* | https://* | file://*)
            "${PYTHON3:-python3}" - "$url" <<'PY' 2>&1 | sed "s|^|  $label ($var=$url): |"
import sys
import urllib.error
import urllib.request

try:
    request = urllib.request.Request(sys.argv[1], method="HEAD", headers={"User-Agent": "wan22-worker install.sh"})
    urllib.request.urlopen(request, timeout=15).close()
except urllib.error.HTTPError as exc:  # it answered: only "not found" says the URL is wrong
    if exc.code == 404:
        print("answers HTTP 404 (not found): is the URL right?")
except Exception as exc:  # no answer at all
    print(f"cannot reach it: {exc}")
PY
            ;;
        *) [ -e "$url" ] || echo "  $label ($var=$url): no such file or folder" ;;
    esac
}

# Every source `local` needs, checked before anything is created: one line per unreachable one.
check_sources() {
    local problems=() line prefix repo_var
    for prefix in COMFYUI VHS ESSENTIALS; do
        repo_var="${prefix}_REPO"
        timeout 30 git ls-remote -q "${!repo_var}" HEAD >/dev/null 2>&1 \
            || problems+=("  git repository ($repo_var=${!repo_var}): git ls-remote cannot read it")
    done
    if [ "$SKIP_PIP" != 1 ]; then
        line=$(reachable "PyTorch wheels" TORCH_INDEX_URL "${TORCH_INDEX_URL%/}/torch/") && [ -z "$line" ] || problems+=("$line")
        line=$(reachable "Python packages" PIP_INDEX_URL "${PIP_INDEX_URL:-https://pypi.org/simple}/pip/") \
            && [ -z "$line" ] || problems+=("$line")
    fi
    [ "${#problems[@]}" -eq 0 ] || die "make comfyui needs GitHub (or the *_REPO mirrors), \
the PyTorch index and a Python package index; it cannot reach:
$(printf '%s\n' "${problems[@]}")
Point the variables named above at mirrors or local copies, or run it where they are reachable. Nothing was created."
}

# local DIR: what `make comfyui` runs. Finished installs are marked with the pins they were made with.
install_local() {
    local dest=${1:?install.sh local needs the folder to install into}
    local stamp
    stamp=$(cat "$PINS_FILE" "${BASH_SOURCE[0]}" | cksum)
    if [ -f "$dest/.complete" ] && [ "$(cat "$dest/.complete")" = "$stamp" ]; then
        log "ComfyUI $COMFYUI_VERSION is already installed in $dest (delete $dest/.complete to install it again)"
        return 0
    fi
    check_sources
    BUILDING=$dest
    rm -f "$dest/.complete"
    log "creating $dest/venv with ${PYTHON3:-python3}"
    "${PYTHON3:-python3}" -m venv "$dest/venv"
    PYTHON=$dest/venv/bin/python
    COMFY_DIR=$dest/ComfyUI
    if [ "$SKIP_PIP" != 1 ]; then
        "$PYTHON" -m pip install --disable-pip-version-check --index-url "$TORCH_INDEX_URL" "torch==$TORCH_VERSION" \
            "torchvision==$TORCHVISION_VERSION" "torchaudio==$TORCHAUDIO_VERSION" "xformers==$XFORMERS_VERSION"
    fi
    install_comfyui
    printf '%s\n' "$stamp" >"$dest/.complete"
    BUILDING=""
    log "installed in $dest: make serve uses it (COMFY_DIR=$COMFY_DIR COMFY_PYTHON=$PYTHON)"
}

main() {
    load_pins
    command -v git >/dev/null || die "git is required"
    case "${1:-comfyui}" in
        comfyui | sageattention) command -v "$PYTHON" >/dev/null || die "PYTHON=$PYTHON not found" ;;
    esac
    case "${1:-comfyui}" in
        comfyui) install_comfyui ;;
        sageattention) install_sageattention ;;
        local) install_local "${2:-}" ;;
        -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}" ;;
        *) die "unknown step '$1' (expected: comfyui, sageattention, local DIR)" ;;
    esac
}

main "$@"
