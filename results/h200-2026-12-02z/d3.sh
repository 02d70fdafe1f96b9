# Call 3: issue 14 -- experiment runs side by side (small, launch-bound models; no preallocation).
. workdirs/gpu/prefix.sh
T0=$(date +%s)
export XLA_PYTHON_CLIENT_PREALLOCATE=false SEQUAX_CACHE=/tmp/sqcache
R=/tmp/r; mkdir -p $R
LIM=${LIM:-540}
go() { name=$1; shift; timeout -s INT -k 20 $LIM python3 "$@" --workdir $R/$name > $R/$name.log 2>&1 & }
go ind40 experiments/recall.py --config recall/induction_heads:mamba --config.train.num_steps=40000
go rope experiments/length_generalization.py --config length_generalization/copy:rope
go sort_plain experiments/length_generalization.py --config length_generalization/task_hinting --config.experiment.only=sort_plain
for m in gla mamba hyena; do for lr in 1e-3 3e-4; do
  go mqar_${m}_$lr experiments/recall.py --config recall/mqar_sweep:$m --config.experiment.only=${m}_T256_d128 --config.optimizer.learning_rate=$lr --config.train.num_steps=8000
done; done
sleep 30; nvidia-smi > $OUT/d3_smi.txt 2>&1
wait
echo "runs done $(( $(date +%s)-T0 ))s"
cd $R && tar czf $OUT/runs.tgz --exclude='*tfevents*' --exclude='mqar_*/*/checkpoints' *; cd - > /dev/null
ls -la $OUT
