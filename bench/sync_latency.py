#!/usr/bin/env python3
"""How long a small durable write takes on a file system, alone and with others at once.

K processes in lock-step (a barrier before every write) each write SIZE bytes to a file of
their own in DIR and call fdatasync, N times; each prints its median. Three processes stand
for the three chunkservers of a local cluster, all of which sync the same record change at
about the same moment (bench/README.md, "Why a metadata operation costs ~1 ms per sync round").

--overwrite writes each file's first MiB (and syncs it) before the clock starts, then writes
inside it: on ext4 without a journal an fdatasync then skips the inode write that an append
(a size change) needs.

Usage: bench/sync_latency.py DIR [--procs K] [--writes N] [--size BYTES] [--overwrite]
"""
import argparse
import multiprocessing as mp
import os
import statistics
import time


def writer(path, writes, size, overwrite, barrier, results):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        if overwrite:
            os.write(fd, b"\0" * max(1 << 20, writes * size))
            os.fsync(fd)
        data = b"x" * size
        lat = []
        for i in range(writes):
            barrier.wait(timeout=60)  # a writer that failed must not hang the others
            t = time.perf_counter()
            os.pwrite(fd, data, i * size)
            os.fdatasync(fd)
            lat.append(time.perf_counter() - t)
        results.put(statistics.median(lat) * 1e6)
    finally:
        os.close(fd)
        os.unlink(path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir")
    ap.add_argument("--procs", type=int, default=3)
    ap.add_argument("--writes", type=int, default=400)
    ap.add_argument("--size", type=int, default=200)
    ap.add_argument("--overwrite", action="store_true")
    a = ap.parse_args()
    if a.procs < 1 or a.writes < 1 or a.size < 1:
        ap.error("--procs, --writes and --size must be at least 1")
    barrier = mp.Barrier(a.procs)
    results = mp.Queue()
    procs = [
        mp.Process(target=writer,
                   args=(os.path.join(a.dir, "sync_latency.%d.%d" % (os.getpid(), k)), a.writes,
                         a.size, a.overwrite, barrier, results)) for k in range(a.procs)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    if any(p.exitcode != 0 for p in procs):
        raise SystemExit("a writer failed")
    medians = sorted(round(results.get()) for _ in procs)
    print("%d process(es), %s, %d x %d bytes + fdatasync: median per process %s us" %
          (a.procs, "overwrite" if a.overwrite else "append", a.writes, a.size,
           " / ".join(str(m) for m in medians)))


if __name__ == "__main__":
    main()
