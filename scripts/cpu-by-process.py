#!/usr/bin/env python3
"""Runs a command and prints the CPU time every *other* process used meanwhile, grouped
by name (the command itself exits before the second snapshot: time it separately).

usage: scripts/cpu-by-process.py target/release/hoard bench thrasher
"""
import os,sys,subprocess,time
def snap():
    d={}
    for p in os.listdir('/proc'):
        if not p.isdigit(): continue
        try:
            s=open(f'/proc/{p}/stat').read()
            comm=s[s.index('(')+1:s.rindex(')')]
            f=s[s.rindex(')')+2:].split()
            d[int(p)]=(comm,int(f[11])+int(f[12]))
        except Exception: pass
    return d
a=snap(); t=time.time()
subprocess.run(sys.argv[1:],stdout=subprocess.DEVNULL)
b=snap(); el=time.time()-t
agg={}
for p,(c,v) in b.items():
    dv=v-a.get(p,(c,0))[1]
    if dv>0:
        key=c if not c.startswith('kworker') else 'kworker*'
        agg[key]=agg.get(key,0)+dv
tck=os.sysconf('SC_CLK_TCK')
print(f'wall {el:.2f}s; CPU-seconds by process name:')
for k,v in sorted(agg.items(),key=lambda x:-x[1])[:12]:
    print(f'  {k:20s} {v/tck:6.2f}  ({100*v/tck/el:.0f}% of one core)')
