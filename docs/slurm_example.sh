#!/usr/bin/env bash
# Run the notebooks' stage runs on a Slurm cluster: `arml plan`, then one job array per phase, each phase
# starting when every task of the previous one succeeded (--dependency=afterok). Afterwards
# `arml reproduce` (same profile, data and ARML_RUNS) only reads the cache.
#
#   bash docs/slurm_example.sh paper data/BCSS-WSSS bcss      # profile, data root, dataset
#   bash docs/slurm_example.sh quick                          # built-in synthetic data
#
# The data root and $ARML_RUNS must be on storage every node sees; adapt SBATCH_OPTS to your cluster
# (partition, account, GPUs, time). A failed task names its step in its log; rerun that one line by hand
# or resubmit: finished runs are skipped, interrupted ones resume.
set -euo pipefail

if [ "${1:-}" = "--task" ]; then # inside a job array: run line $SLURM_ARRAY_TASK_ID of the phase file
    line=$(sed -n "${SLURM_ARRAY_TASK_ID}p" "$2")
    echo "$line"
    eval "$line"
    exit
fi

PROFILE=${1:-paper}
DATA=${2:-}
DATASET=${3:-luad}
export ARML_RUNS=${ARML_RUNS:-$PWD/runs}
OUT=${PLAN_DIR:-$PWD/plan-$PROFILE}
SBATCH_OPTS=(--gres=gpu:1 --cpus-per-task=8 --mem=48G --time=24:00:00)

args=(--profile "$PROFILE")
if [ -n "$DATA" ]; then
    args+=(--data "$DATA" --dataset "$DATASET")
fi
mkdir -p "$OUT/logs"
rm -f "$OUT"/phase*.txt
arml plan "${args[@]}" >"$OUT/plan.txt"
# "# phase N: ..." starts phase N; its command lines go to phaseN.txt
awk -v out="$OUT" '/^# phase [0-9]+:/ { file = out "/phase" ($3 + 0) ".txt"; next } /^#/ { next } NF { print > file }' \
    "$OUT/plan.txt"

dependency=()
for file in $(ls "$OUT"/phase*.txt | sort -V); do
    phase=$(basename "$file" .txt)
    tasks=$(wc -l <"$file")
    job=$(sbatch --parsable "${SBATCH_OPTS[@]}" "${dependency[@]}" --array="1-$tasks" \
        --job-name="arml-$phase" --output="$OUT/logs/%x-%a.out" --export=ALL \
        "$0" --task "$file")
    echo "$phase: $tasks tasks, job $job"
    dependency=(--dependency="afterok:$job")
done
