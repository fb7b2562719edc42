# Issue 18, the call after 18ab on the same machine: FP8 and INT8 engines with today's defaults (FP8 through kvant's
# GEMM to 128 rows; INT8 W1 untimed since the 8-bit GEMM changes), TPOT at batch 1/64 and W1, then where INT4's
# batch-1 and batch-64 steps go (`kvant bench profile`, PDL off so that the kernel table is a breakdown). bf16 is
# 18ab's when the same card is kept warm; BF16=1 reruns it here. A name in QUANTS ending in +fp8kv runs that format
# with an FP8 KV cache. Ends in $OUT/r18ac.tgz.
C=bench/configs
TGZ=r18ac.tgz; source bench/gpu_lib.sh
for q in ${QUANTS:-fp8 int8} $([ "${BF16:-0}" = 1 ] && echo bf16); do
  mkdir -p $W/$q
  TAIL=6 step $q ${T_ENGINE:-120} python -P bench/engine_quant_pass.py --model $C/llama-3.1-8b.json --quant ${q%+fp8kv} --kv-cache-dtype $([ ${q%+fp8kv} = $q ] && echo auto || echo fp8) --output-len 32 --out $W/$q
done
TAIL=40 step prof-int4 ${T_PROF:-100} env KVANT_PDL=0 python -P -m kvant.tui.cli bench profile --model $C/llama-3.1-8b.json --quant int4 --batch-sizes ${PROF_BS:-1,64} --input-len 128 --steps 10 --top 16 --json $W/profile-int4.json
