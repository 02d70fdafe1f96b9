# issue 14 row 3 (Mamba induction heads, distance curriculum, evaluations on the plain task), then
# issue 10's training throughput: 12-layer GLA vs attention (GPU to itself for that part)
. workdirs/gpu/prefix.sh
export SEQUAX_CACHE=/tmp/sqcache
R=/tmp/r; mkdir -p $R; T0=$(date +%s)
timeout -s INT -k 20 ${ILIM:-270} python3 experiments/recall.py --config recall/induction_heads:mamba --workdir $R/induction > $R/induction.log 2>&1
echo "induction rc=$? $(( $(date +%s)-T0 ))s" | tee -a $R/summary.txt
cd $R && tar czf $OUT/induction.tgz --exclude='checkpoints' --exclude='*tfevents*' induction induction.log summary.txt; cd - > /dev/null
rest=$(( ${LIM:-440} - $(date +%s) + T0 ))
timeout $rest python3 experiments/benchmark_training.py --mixers attention,gla --steps 12 > $OUT/b2_training.jsonl 2> $OUT/b2_training.err
echo "training rc=$? $(( $(date +%s)-T0 ))s"
tail -c 2000 $OUT/b2_training.err > $OUT/b2_training_err_tail.txt; rm -f $OUT/b2_training.err
