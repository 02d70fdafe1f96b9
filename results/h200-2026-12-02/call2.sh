# issue 14 rows 1, 2, 3, 4, 6 side by side on one GPU (small models: they share it well)
# Run from the project root on the GPU machine. That machine has no ml_collections: carry the
# wheels that ../shared/tools/peers_for_gpu.sh puts in .peers/ and install them first.
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .peers/whl/*.whl > /dev/null 2>&1
export PYTHONPATH=/tmp/site:$PWD:.peers/src:.peers/stubs PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
export SEQUAX_CACHE=/tmp/sqcache XLA_PYTHON_CLIENT_MEM_FRACTION=0.18
R=/tmp/r; mkdir -p $R; LIM=${LIM:-555}
run() { name=$1; shift; ( s=$(date +%s); timeout -s INT -k 20 $LIM python3 "$@" > $R/$name.log 2>&1; echo "$name rc=$? $(( $(date +%s)-s ))s" >> $R/summary.txt ) & }
run listops_s5 experiments/lra.py --config lra/listops:s5 --workdir $R/listops_s5_fast --config.train.num_steps=24000 --config.optimizer.warmup_steps=1920 --config.eval.every=4000 --config.checkpoint.every=4000
[ -n "$NOIND" ] || run induction experiments/recall.py --config recall/induction_heads:mamba --workdir $R/induction
run hinting experiments/length_generalization.py --config length_generalization/task_hinting --workdir $R/hinting
run lg_copy experiments/length_generalization.py --config length_generalization/copy:nope,rope,alibi --workdir $R/lg_copy
for i in $(seq 120); do ls $SEQUAX_CACHE/listops/*/manifest.json > /dev/null 2>&1 && break; sleep 1; done
LIM=$((LIM - i)) run listops_transformer experiments/lra.py --config lra/listops:transformer --workdir $R/listops_transformer
nvidia-smi > $R/smi_during.txt 2>&1
wait
nvidia-smi --query-gpu=memory.used --format=csv >> $R/summary.txt
cd $R && tar czf $OUT/results14.tgz --exclude='checkpoints' --exclude='*.ckpt*' $(ls -d */ *.txt *.log) 2>/dev/null
tar czf $OUT/s5_ckpt.tgz listops_s5_fast 2>/dev/null; cp $R/summary.txt $OUT/
