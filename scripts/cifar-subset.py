#!/usr/bin/env python3
"""Writes a CIFAR-10 subset archive in the official binary layout (which `nin train --data`
reads like the real one), for carrying to a machine that cannot download the dataset.

    python3 scripts/cifar-subset.py SRC.tar.gz OUT.tar.gz TRAIN_PER_BATCH TEST

Takes the first TRAIN_PER_BATCH records of each of the five training batches and the first TEST
records of the test batch; the records are copied byte for byte.
"""
import io
import sys
import tarfile

RECORD = 3073
FOLDER = "cifar-10-batches-bin"


def main():
    src, out, per_batch, n_test = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    wanted = {f"data_batch_{i}.bin": per_batch for i in range(1, 6)}
    wanted["test_batch.bin"] = n_test
    wanted["batches.meta.txt"] = None
    found = {}
    with tarfile.open(src, "r:*") as tar:
        for member in tar:
            name = member.name.rsplit("/", 1)[-1]
            if name in wanted and member.isfile():
                data = tar.extractfile(member).read()
                limit = wanted[name]
                found[name] = data if limit is None else data[: limit * RECORD]
    missing = sorted(set(wanted) - set(found))
    if missing:
        sys.exit(f"{src}: missing {', '.join(missing)}")
    with tarfile.open(out, "w:gz") as tar:
        for name in sorted(found):
            info = tarfile.TarInfo(f"{FOLDER}/{name}")
            info.size = len(found[name])
            tar.addfile(info, io.BytesIO(found[name]))
    print(f"{out}: {5 * per_batch} training and {n_test} test images")


if __name__ == "__main__":
    main()
