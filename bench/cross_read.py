#!/usr/bin/env python3
"""Cold reads of files another mount wrote, through one or more reader mounts of one cluster.

  bench/cross_read.py WRITER_DIR N PID:READER_MOUNT [PID:READER_MOUNT ...]

Writes N files of distinct random 64 KiB through WRITER_DIR (a directory inside the writer's
mount, which must be the demo mount at demo/mnt unless QFS_WRITER_MOUNT says otherwise), then,
for each reader in the order given: sync, SIGUSR1 to every reader (empties its chunk cache),
drop the kernel's caches, and time open + read to EOF + close of every file through that
reader (the same relative path). Prints files/s and the median per file. Needs root.
Alternate the readers' order between runs: the servers' state moves with each pass.
"""
import os
import statistics
import sys
import time

WRITER_MOUNT = os.environ.get(
    "QFS_WRITER_MOUNT", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "demo", "mnt"))


def main():
    if len(sys.argv) < 4:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    wdir, n, readers = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    os.makedirs(wdir, exist_ok=True)
    for i in range(n):
        with open(os.path.join(wdir, "f%d" % i), "wb") as f:
            f.write(os.urandom(65536))
    rel = os.path.relpath(os.path.abspath(wdir), os.path.abspath(WRITER_MOUNT))
    for item in readers:
        d = item.split(":", 1)[1]
        os.sync()
        for other in readers:
            try:
                os.kill(int(other.split(":", 1)[0]), 10)
            except OSError:
                pass
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        time.sleep(0.5)
        lat = []
        t0 = time.perf_counter()
        for i in range(n):
            t = time.perf_counter()
            fd = os.open(os.path.join(d, rel, "f%d" % i), os.O_RDONLY)
            while os.read(fd, 1 << 20):
                pass
            os.close(fd)
            lat.append(time.perf_counter() - t)
        dt = time.perf_counter() - t0
        print("%s %.0f files/s median %.0f us" % (d, n / dt, statistics.median(lat) * 1e6))
    for i in range(n):
        os.unlink(os.path.join(wdir, "f%d" % i))


if __name__ == "__main__":
    main()
