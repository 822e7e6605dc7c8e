#!/usr/bin/env bash
# Writes the small seed corpora in fuzz/seeds/ (committed): valid inputs for each target, from
# which libFuzzer mutates. Needs python3 and a built `nin` (target/debug or target/release).
set -euo pipefail
cd "$(dirname "$0")"
NIN=${NIN:-../target/release/nin}
[ -x "$NIN" ] || NIN=../target/debug/nin
DATA=${DATA:-../../shared/data/cifar-10-binary.tar.gz}
rm -rf seeds && mkdir -p seeds/{cifar_records,cifar_archive,model_dir,image,run_state}

python3 - <<'PY'
import io, struct, tarfile, zlib, gzip
# Records: selector byte (0 CIFAR-10, 1 CIFAR-100 fine, 2 coarse) then whole records.
open('seeds/cifar_records/c10', 'wb').write(bytes([0]) + (bytes([3]) + bytes(range(256)) * 12) * 2)
open('seeds/cifar_records/c100', 'wb').write(bytes([1]) + bytes([7, 42]) + bytes(3072))
open('seeds/cifar_records/names', 'wb').write(bytes([0]) + b'\n'.join(b'class%d' % i for i in range(10)))
# A complete CIFAR-10 archive of one black image per file.
buf = io.BytesIO()
with tarfile.open(fileobj=buf, mode='w') as tar:
    members = ['data_batch_%d.bin' % i for i in range(1, 6)] + ['test_batch.bin']
    for name in members:
        data = bytes([1]) + bytes(3072)
        info = tarfile.TarInfo('cifar-10-batches-bin/' + name); info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    names = b'\n'.join(b'class%d' % i for i in range(10)) + b'\n'
    info = tarfile.TarInfo('cifar-10-batches-bin/batches.meta.txt'); info.size = len(names)
    tar.addfile(info, io.BytesIO(names))
open('seeds/cifar_archive/one_image_each.tar.gz', 'wb').write(gzip.compress(buf.getvalue(), mtime=0))
# A 4×3 RGB PNG.
def chunk(kind, data):
    return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))
raw = b''.join(b'\x00' + bytes([200, 30, 30] * 4) for _ in range(3))
png = b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', 4, 3, 8, 2, 0, 0, 0)) \
    + chunk(b'IDAT', zlib.compress(raw)) + chunk(b'IEND', b'')
open('seeds/image/red.png', 'wb').write(png)
PY

# A one-step run of a tiny NIN: its model directory and run-folder JSON files.
RUN=$(mktemp -d)
"$NIN" train --data "$DATA" --out "$RUN/run" --quiet --threads 1 --epochs 1 --batch-size 16 \
    --limit-train 16 --limit-eval 16 \
    --model-args '{"mlpconv1":[4,4,4],"mlpconv2":[4,4,4],"mlpconv3":[4,4]}' 2>/dev/null
python3 - "$RUN/run" <<'PY'
import sys
run = sys.argv[1]
config = open(run + '/config.json', 'rb').read()
weights = open(run + '/model.safetensors', 'rb').read()
open('seeds/model_dir/tiny_nin', 'wb').write(len(config).to_bytes(2, 'big') + config + weights)
import json
json.dump(json.load(open(run + '/run.json'))['recipe'], open('seeds/run_state/recipe.json', 'w'), indent=2)
for name in ['run.json', 'trainer_state.json', 'config.json']:
    open('seeds/run_state/' + name, 'wb').write(open(run + '/' + name, 'rb').read())
PY
rm -rf "$RUN"
du -sh seeds/*
