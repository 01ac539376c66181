#!/usr/bin/env python3
"""Per-call latency of the system calls behind bench/run.sh's rows, on any mounted directory.

  bench/latency.py pwrite DIR N      N random 4 KiB pwrites into a 64 MiB file, then fsync
  bench/latency.py smallwrite DIR N  N x (open(O_CREAT|O_TRUNC), write 64 KiB, close)
  bench/latency.py smallread DIR N   writes N 64 KiB files, drops caches, then open/read/close
  bench/latency.py stat DIR N        creates N empty files, drops caches, then stats each
  bench/latency.py create DIR N      N x (open(O_CREAT|O_EXCL), close), then N unlinks; run it
                                     twice on one DIR to time names removed before (DIR is kept)

Prints the median and 90th percentile of each call. Needs root to drop caches (skipped
otherwise); with QFS_MOUNT_PID set, the quorumfs mount's chunk cache is emptied too (SIGUSR1). Pin the caller with taskset to see where the time goes: on this VM a thread woken
on another, idle vCPU costs ~80 us (bench/README.md, "Thread wake-ups").
"""
import os
import random
import statistics
import sys
import time


def drop_caches():
    os.sync()
    if os.environ.get("QFS_MOUNT_PID"):  # the quorumfs mount's chunk cache too (SIGUSR1)
        try:
            os.kill(int(os.environ["QFS_MOUNT_PID"]), 10)
        except OSError:
            pass
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError:
        pass


def report(rows):
    for name, v in rows:
        v = sorted(v)
        print("%-16s median %7.0f us  p90 %7.0f us" %
              (name, statistics.median(v) * 1e6, v[int(len(v) * 0.9)] * 1e6))


def pwrite(d, n):
    p = os.path.join(d, "latency-pwrite.dat")
    fd = os.open(p, os.O_CREAT | os.O_RDWR, 0o644)
    mib = os.urandom(1 << 20)
    for i in range(64):
        os.pwrite(fd, mib, i << 20)
    os.fsync(fd)
    block = os.urandom(4096)
    lat = []
    start = time.perf_counter()
    for _ in range(n):
        off = random.randrange(16384) * 4096
        t = time.perf_counter()
        os.pwrite(fd, block, off)
        lat.append(time.perf_counter() - t)
    t = time.perf_counter()
    os.fsync(fd)
    end = time.perf_counter()
    os.close(fd)
    os.unlink(p)
    report([("pwrite 4 KiB", lat)])
    print("%.0f IOPS with the closing fsync (%.3f s of it)" % (n / (end - start), end - t))


def timed_per_file(d, n, names, steps):
    """Runs steps (a list of functions of the path, each returning what the next one takes)
    on n files; returns each step's latencies."""
    lat = [[] for _ in steps]
    for i in range(n):
        arg = os.path.join(d, "f%d" % i)
        for k, step in enumerate(steps):
            t = time.perf_counter()
            arg = step(arg)
            lat[k].append(time.perf_counter() - t)
    rows = list(zip(names, lat))
    if len(steps) > 1:
        rows.append(("total", [sum(x) for x in zip(*lat)]))
    return rows


def unlink_all(d, n):
    return timed_per_file(d, n, ["unlink"], [os.unlink])


def smallwrite(d, n):
    buf = os.urandom(65536)

    def write(fd):
        os.write(fd, buf)
        return fd

    rows = timed_per_file(
        d, n, ["open(O_CREAT)", "write 64 KiB", "close"],
        [lambda p: os.open(p, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644), write, os.close])
    unlink_all(d, n)
    report(rows)


def smallread(d, n):
    for i in range(n):
        with open(os.path.join(d, "f%d" % i), "wb") as f:
            f.write(os.urandom(65536))
    drop_caches()

    def read_all(fd):
        while os.read(fd, 1 << 20):
            pass
        return fd

    rows = timed_per_file(d, n, ["open", "read to EOF", "close"],
                          [lambda p: os.open(p, os.O_RDONLY), read_all, os.close])
    unlink_all(d, n)
    report(rows)


def create(d, n):
    rows = timed_per_file(
        d, n, ["open(O_CREAT)", "close"],
        [lambda p: os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644), os.close])
    report(rows + unlink_all(d, n))


def stat(d, n):
    for i in range(n):
        open(os.path.join(d, "f%d" % i), "w").close()
    drop_caches()
    rows = timed_per_file(d, n, ["stat"], [os.stat])
    unlink_all(d, n)
    report(rows)


def main():
    cmds = {"pwrite": pwrite, "smallwrite": smallwrite, "smallread": smallread, "stat": stat,
            "create": create}
    if len(sys.argv) != 4 or sys.argv[1] not in cmds:
        sys.stderr.write(__doc__)
        sys.exit(2)
    d = os.path.join(sys.argv[2], "latency")
    os.makedirs(d, exist_ok=True)
    cmds[sys.argv[1]](d, int(sys.argv[3]))
    if sys.argv[1] != "create":
        os.rmdir(d)


if __name__ == "__main__":
    main()
