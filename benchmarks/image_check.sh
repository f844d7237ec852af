#!/usr/bin/env bash
# make image-check: the tiny pipeline's submission image built for real from its package folder,
# offline, and run with no network, as the organisers would (podman standing in for docker).
#
#   benchmarks/image_check.sh            [N=10: the first N problems of datasets/sample/test.jsonl]
#
# 1. A base image, built once and kept: Debian bookworm by debootstrap (its Python is the 3.11 of
#    package.python), with the torch stack this venv runs on, installed as pytorch/pytorch has it.
# 2. `make package RECIPE=tiny`: runs/tiny-image/, every wheel inside it.
# 3. `podman build --network none --from <base>` of that folder (the folder's FROM replaced).
# 4. `podman run --network none` with the test file mounted at package.input, under a deadline;
#    /app/results.jsonl copied out and checked with `orchestrator data check --against`.
# It prints the image size, build time and run time. Needs root, podman, runc and debootstrap.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
missing=""
for tool in podman runc debootstrap; do command -v "$tool" >/dev/null 2>&1 || missing="$missing $tool"; done
if [ -n "$missing" ]; then
    echo "Error: image-check needs podman, runc and debootstrap; missing:$missing (as root: apt-get install podman runc debootstrap)" >&2
    exit 2
fi
if [ "$(id -u)" != 0 ]; then
    echo "Error: image-check needs root (debootstrap and podman's storage); run it as root" >&2
    exit 2
fi
python="$repo/.venv/bin/python"
[ -x "$python" ] || { echo "Error: no $python; run \`make setup\` first" >&2; exit 2; }

N=${N:-10}
cache="${IMAGE_CHECK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/orchestrator/image-check}"
work="$repo/runs/image-check"
mkdir -p "$cache" "$work"
# crun refuses hybrid cgroups and the default ulimits are not always allowed: runc, none set
printf '[containers]\ndefault_ulimits = []\n' > "$cache/containers.conf"
export CONTAINERS_CONF="$cache/containers.conf"
podman_options=(--runtime runc --cgroup-manager cgroupfs --storage-driver "${STORAGE_DRIVER:-overlay}"
                --root "$cache/storage" --runroot "$cache/run")
pod() { podman "${podman_options[@]}" "$@"; }
seconds() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(seconds)" 'BEGIN { printf "%.0f", b - a }'; }

# ---------------------------------------------------------------- 1. the base image
# the torch stack the requirements leave to the base (llamafactory needs torchvision, torchaudio too)
stack=$("$python" -c 'from importlib import metadata as m; print(" ".join(n + "==" + m.version(n).split("+")[0] for n in ("torch", "torchvision", "torchaudio")))')
py=$("$python" -c 'from orchestrator.core.recipes.loading import load_pipeline as l; print(l("'"$repo"'/recipes/tiny-pipeline.yaml").recipe.package.python)')
base="localhost/orchestrator-check-base:$(echo "$stack" | tr ' ' '-' | tr -d '=')"
if ! pod image exists "$base"; then
    root="$cache/rootfs"
    if [ ! -e "$root/.debootstrap-done" ]; then
        rm -rf "$root"
        # either file may be missing (Debian 12 has only the .sources): a missing one is no error
        mirror=$(cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null |
            sed -n 's/^URIs: *//p; s/^deb  *\(\[[^]]*\] *\)\{0,1\}\(http[^ ]*\) .*/\2/p' | grep -v security | head -1) || true
        echo "image-check: debootstrap bookworm from ${mirror:-http://deb.debian.org/debian} into $root"
        debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,python-is-python3 \
            bookworm "$root" "${mirror:-http://deb.debian.org/debian}" > "$cache/debootstrap.log" 2>&1 ||
            { echo "Error: debootstrap failed: see $cache/debootstrap.log" >&2; exit 1; }
        touch "$root/.debootstrap-done"
    fi
    got=$(chroot "$root" python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    if [ "$got" != "$py" ]; then
        echo "Error: the base's Python is $got, package.python is $py: the wheels would not install" >&2
        exit 1
    fi
    echo "image-check: $stack into the base (as pytorch/pytorch ships them)"
    platforms=$(for m in $(seq 35 -1 17); do printf -- '--platform manylinux_2_%s_x86_64 ' "$m"; done)
    # shellcheck disable=SC2086
    "$python" -m pip install --quiet --no-compile --only-binary=:all: --python-version "$py" --implementation cp \
        $platforms --platform manylinux2014_x86_64 --target "$root/usr/local/lib/python$py/dist-packages" \
        $stack
    rm -rf "$root/usr/local/lib/python$py/dist-packages/bin"
    echo "image-check: importing the base as $base"
    tar -C "$root" --exclude=./.debootstrap-done -c . |
        pod import --change 'ENV PIP_BREAK_SYSTEM_PACKAGES=1' --change 'CMD ["bash"]' - "$base" >/dev/null
fi

# ---------------------------------------------------------------- 2. the package folder
make -C "$repo" --no-print-directory package RECIPE=tiny KEPT=  # the sample, whatever data the project keeps
folder="$repo/runs/tiny-image"
input=$(sed -n 's/^  input: //p' "$folder/recipes/pipeline.yaml")

# ---------------------------------------------------------------- 3. the offline build
image="localhost/orchestrator-check-submission"
echo "image-check: podman build --network none --from $base $folder"
started=$(seconds)
pod build --quiet --network none --from "$base" -t "$image" "$folder" > "$work/build.log" 2>&1 ||
    { tail -20 "$work/build.log" >&2; echo "Error: the offline build failed: see $work/build.log" >&2; exit 1; }
build_s=$(elapsed "$started")

# ---------------------------------------------------------------- 4. the run, no network
rm -rf "$work/tcdata" "$work/results.jsonl"
mkdir -p "$work/tcdata"
head -n "$N" "$repo/datasets/sample/test.jsonl" > "$work/tcdata/$(basename "$input")"
limit=${LIMIT_S:-900}
pod rm --force --ignore orchestrator-check >/dev/null
echo "image-check: podman run --network none, $N problems at $input, deadline $limit s"
started=$(seconds)
code=0
timeout --kill-after 30 "$limit" podman "${podman_options[@]}" run --name orchestrator-check --network none \
    -v "$work/tcdata:$(dirname "$input"):ro" -e DEADLINE_S=$((limit - 120)) "$image" > "$work/run.log" 2>&1 || code=$?
run_s=$(elapsed "$started")
pod cp orchestrator-check:/app/results.jsonl "$work/results.jsonl" 2>/dev/null || true
pod rm --force --ignore orchestrator-check >/dev/null
tail -3 "$work/run.log"
if [ "$code" != 0 ] || [ ! -s "$work/results.jsonl" ]; then
    echo "Error: the container exited with code $code and no results: see $work/run.log" >&2
    exit 1
fi
"$repo/.venv/bin/orchestrator" data check "$work/results.jsonl" --against "$work/tcdata/$(basename "$input")"

size=$(pod image inspect --format '{{.Size}}' "$image")
base_size=$(pod image inspect --format '{{.Size}}' "$base")
awk -v s="$size" -v b="$base_size" -v w="$(du -sk "$folder/wheels" | cut -f1)" -v bs="$build_s" -v rs="$run_s" -v n="$N" 'BEGIN {
    printf "image-check: image %.2f GB (base %.2f GB: Debian, Python, torch), wheels/ %.0f MB\n", s / 1e9, b / 1e9, w / 1024
    printf "image-check: offline build %d s, run of %d problems with no network %d s: results pass data check\n", bs, n, rs }' |
    tee "$work/figures.txt"
