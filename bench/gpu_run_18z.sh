# Issue 18: where a W1-like decode step's time goes, per format: `kvant bench profile` at 256 sequences of 800-token
# context (W1's mean context is ~850), Llama-3.1-8B random weights, PDL off so that the per-kernel table is a
# breakdown. bf16 against FP8 and INT8 (W1 at 70 % and ~75 % of their rooflines where bf16 ran 79 %) and INT4.
# FORMATS selects. Ends in $OUT/r18z.tgz.
C=bench/configs
TGZ=r18z.tgz; source bench/gpu_lib.sh
for q in ${FORMATS:-bf16 fp8 int8 int4}; do
  TAIL=30 step prof-$q ${T_PROF:-80} env KVANT_PDL=0 python -P -m kvant.tui.cli bench profile --model $C/llama-3.1-8b.json --quant $q --batch-sizes 256 --input-len 800 --steps 10 --top 14 --json $W/profile-$q.json
done
