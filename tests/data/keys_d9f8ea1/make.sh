#!/usr/bin/env bash
# How these keys were made (session 43): `nnmark train` at commit d9f8ea1, in a checkout of that
# commit (OLD) with the shared data beside it (SHARED). The models are not kept: the keys are
# read on models that never saw them (tests/test_old_keys.py). "rc=1" is the CLI's warning that
# 2 epochs did not carry every mark; the key is written either way.
set -u
OLD=${OLD:?a checkout of d9f8ea1} SHARED=${SHARED:?the shared data folder} OUT=${OUT:-.}
N="env PYTHONPATH=$OLD python -m nnmark.cli"
for s in actsign adi content deepsigns fragile frontier newlabel noise stdm tartaglione uchida watermas; do
  $N train --model cnn --scheme $s --epochs 2 --owner "key made at d9f8ea1" \
    --out "$OUT/$s.safetensors" --key-out "$OUT/$s.nnkey"; echo "$s rc=$?"
done
$N train --model cnn --scheme unrelated --set "source=fashion-mnist:$SHARED/fashion-mnist" \
  --epochs 2 --owner "key made at d9f8ea1" --out "$OUT/unrelated.safetensors" \
  --key-out "$OUT/unrelated.nnkey"; echo "unrelated rc=$?"
$N train --model cnn --scheme uchida+content --epochs 2 --owner "key made at d9f8ea1" \
  --out "$OUT/composite.safetensors" --key-out "$OUT/composite.nnkey"; echo "composite rc=$?"
$N train --model cnn --scheme uchida --message "nnmark d9f8ea1" --epochs 2 \
  --owner "key made at d9f8ea1" --out "$OUT/message.safetensors" --key-out "$OUT/message.nnkey"
echo "message rc=$?"
$N train --data "seg:$SHARED/seg-bbbc039" --model unet --scheme segtrigger --epochs 1 \
  --owner "key made at d9f8ea1" --out "$OUT/segtrigger.safetensors" \
  --key-out "$OUT/segtrigger.nnkey"; echo "segtrigger rc=$?"
