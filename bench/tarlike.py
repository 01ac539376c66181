#!/usr/bin/env python3
"""What tar and cp -p do to each file they make, timed: create it (O_EXCL), write BYTES,
set its times, owner and mode through the open descriptor, close it; COUNT files in DIR.
Prints files per second and the time per file.
Usage: bench/tarlike.py DIR COUNT [BYTES]"""
import os
import sys
import time

d, n = sys.argv[1], int(sys.argv[2])
buf = b"x" * (int(sys.argv[3]) if len(sys.argv) > 3 else 5000)
start = time.monotonic()
for i in range(n):
    fd = os.open(f"{d}/f{i}", os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600)
    os.write(fd, buf)
    os.utime(fd, ns=(1_000_000_000, 1_200_000_000))
    os.fchown(fd, 1, 1)
    os.fchmod(fd, 0o644)
    os.close(fd)
took = time.monotonic() - start
for i in (0, n - 1):
    st = os.stat(f"{d}/f{i}")
    if (st.st_mtime_ns, st.st_uid, st.st_mode & 0o7777, st.st_size) != (1_200_000_000, 1, 0o644, len(buf)):
        sys.exit(f"f{i}: mtime {st.st_mtime_ns}, uid {st.st_uid}, mode {st.st_mode:o}, size {st.st_size}")
print(f"{n / took:.0f} files/s ({took * 1000 / n:.2f} ms per file)")
