import os, time, sys, statistics
d = sys.argv[1]; n = int(sys.argv[2])
os.makedirs(d, exist_ok=True)
opens=[]; closes=[]; unl=[]; stats=[]
for i in range(n):
    p = os.path.join(d, "f%d" % i)
    t0=time.perf_counter(); fd=os.open(p, os.O_CREAT|os.O_EXCL|os.O_WRONLY, 0o644); t1=time.perf_counter(); os.close(fd); t2=time.perf_counter()
    opens.append(t1-t0); closes.append(t2-t1)
for i in range(n):
    p = os.path.join(d, "f%d" % i)
    t0=time.perf_counter(); os.unlink(p); unl.append(time.perf_counter()-t0)
for name, v in (("open(O_CREAT)", opens), ("close", closes), ("unlink", unl)):
    print("%-14s median %.0f us  p90 %.0f us" % (name, statistics.median(v)*1e6, sorted(v)[int(len(v)*.9)]*1e6))
