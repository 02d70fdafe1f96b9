# issue 14: MQAR (row 5, five mixers side by side), plain task hinting (row 4), RoPE copy (row 6),
# Mamba induction heads with the distance curriculum (row 3, two curriculum lengths). Resumes.
. workdirs/gpu/prefix.sh
export SEQUAX_CACHE=/tmp/sqcache XLA_PYTHON_CLIENT_MEM_FRACTION=0.1
R=/tmp/r; mkdir -p $R; LIM=${LIM:-540}; TAG=${TAG:-x}
run() { name=$1; shift; ( s=$(date +%s); timeout -s INT -k 20 $LIM python3 "$@" > $R/$name.$TAG.log 2>&1; echo "$TAG $name rc=$? $(( $(date +%s)-s ))s" >> $R/summary.txt ) & }
for m in attention mamba gla hyena deltanet; do
  run mqar_$m experiments/recall.py --config recall/mqar_sweep:zoology --workdir $R/mqar --config.experiment.only="${m}_T256_*"
done
run hinting_plain experiments/length_generalization.py --config length_generalization/task_hinting --workdir $R/hinting --config.experiment.only=sort_plain
run lg_copy_rope experiments/length_generalization.py --config length_generalization/copy:rope --workdir $R/lg_copy
run induction experiments/recall.py --config recall/induction_heads:mamba --workdir $R/induction
run induction_c5k experiments/recall.py --config recall/induction_heads:mamba --workdir $R/induction_c5k --config.data.task_kwargs.curriculum_steps=5000
sleep 60; nvidia-smi > $R/smi_during.$TAG.txt 2>&1
wait
if [ -n "$FINAL" ]; then  # every MQAR run finished: one report and plot over all of them
  timeout 100 python3 experiments/recall.py --config recall/mqar_sweep:zoology --workdir $R/mqar --config.experiment.only='*_T256_*' > $R/mqar_all.log 2>&1
  echo "mqar_all rc=$?" >> $R/summary.txt
fi
cd $R && tar czf $OUT/results14_$TAG.tgz --exclude='checkpoints' --exclude='*.ckpt*' --exclude='*tfevents*' $(ls -d */ *.txt *.log 2>/dev/null) 2>/dev/null
cp $R/summary.txt $OUT/summary_$TAG.txt
