#!/usr/bin/env bash
# Do two commits of stage2 give the same outputs? Byte-for-byte, on the built-in demo,
# +institution=xyz and the three ITC 2019 instances (imported by each commit's own importer).
#
#   experiments/scaling/same_outputs.sh REV_A REV_B [WORKDIR]      # ~2-4 min on 2 cores
#
# Each commit's stage2/, conf/ and notebooks/ are exported with `git archive` (the working tree
# is not read or changed) and put first on PYTHONPATH; every run fixes as_of, so the EAV window
# does not depend on the day. Compares the sha256 of student_batches.csv,
# batch_student_membership.csv, batch_course_enrollment.csv and batch_quality.csv, prints one
# line per file and exits 1 if any differs. The ITC files are read from $ITC_DIR (default
# <repo>/../shared/data/itc2019). WORKDIR (default a new temporary directory) keeps the exports,
# outputs and logs.
set -euo pipefail

if [ $# -lt 2 ]; then
    sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
REPO=$(cd "$(dirname "$0")/../.." && pwd)
WORK=${3:-$(mktemp -d "${TMPDIR:-/tmp}/stage2-same-outputs.XXXXXX")}
ITC_DIR=${ITC_DIR:-$REPO/../shared/data/itc2019}
ITC=(muni-fsps-spr17 pu-cs-fal07 yach-fal17)
FILES=(student_batches.csv batch_student_membership.csv batch_course_enrollment.csv batch_quality.csv)
COMMON=(as_of=2025-08-01T00:00:00 tracking.enabled=false report.notebook=false)
PYTHON=${PYTHON:-python}
export MLFLOW_DISABLE_TELEMETRY=true
mkdir -p "$WORK"
cd "$WORK"  # Hydra's run directories land here, not in the repository

revs=()
for rev in "$1" "$2"; do
    sha=$(git -C "$REPO" rev-parse --short "$rev^{commit}")
    revs+=("$sha")
    src=$WORK/src-$sha out=$WORK/out-$sha
    if [ ! -d "$src/stage2" ]; then
        mkdir -p "$src"
        git -C "$REPO" archive "$sha" stage2 conf notebooks | tar -x -C "$src"
    fi
    mkdir -p "$out"
    echo "$sha: stage2 from $src" >&2
    export PYTHONPATH=$src
    "$PYTHON" -m stage2 "${COMMON[@]}" output_dir="$out/demo" >"$out/demo.log" 2>&1
    "$PYTHON" -m stage2 +institution=xyz "${COMMON[@]}" output_dir="$out/xyz" >"$out/xyz.log" 2>&1
    for x in "${ITC[@]}"; do
        [ -d "$out/data-$x" ] || "$PYTHON" -m stage2.importers.itc2019 "$ITC_DIR/$x.xml" "$out/data-$x" >"$out/import-$x.log" 2>&1
        "$PYTHON" -m stage2 data.input_dir="$out/data-$x" "${COMMON[@]}" output_dir="$out/$x" >"$out/$x.log" 2>&1
    done
    unset PYTHONPATH
done

differ=0 same=0
for instance in demo xyz "${ITC[@]}"; do
    for f in "${FILES[@]}"; do
        a=$(sha256sum <"$WORK/out-${revs[0]}/$instance/$f" | cut -c1-12)
        b=$(sha256sum <"$WORK/out-${revs[1]}/$instance/$f" | cut -c1-12)
        if [ "$a" = "$b" ]; then
            same=$((same + 1)); echo "same     $instance/$f ($a)"
        else
            differ=$((differ + 1)); echo "DIFFERS  $instance/$f (${revs[0]} $a, ${revs[1]} $b)"
        fi
    done
done
echo "${revs[0]} vs ${revs[1]}: $same files identical, $differ differ (outputs in $WORK)"
echo "Regenerate: experiments/scaling/same_outputs.sh ${revs[0]} ${revs[1]}"
[ "$differ" -eq 0 ]
