#!/usr/bin/env python3
"""Finds import circles between the modules of each crate (#29).

A module here is a file or folder directly under a crate's src/ (lib.rs
aside); it depends on another when its code (not its comments or tests)
names `crate::other` (or a name lib.rs re-exports from it). Exits 1 and
prints each circle if there is one. Run by scripts/test.sh.
"""
import glob, os, re, sys


def circles(root):
    src = os.path.join(root, 'src')
    if not os.path.exists(os.path.join(src, 'lib.rs')):
        return []

    lib = open(os.path.join(src, 'lib.rs')).read()
    # re-exported names -> module
    reexp = {}
    for m in re.finditer(r'pub use (\w+)::(\{[^}]*\}|\w+);', lib, re.S):
        mod, names = m.group(1), m.group(2)
        for n in re.findall(r'\w+', names):
            reexp[n] = mod
    mods = {}
    for dirpath, _, files in os.walk(src):
        for f in files:
            if not f.endswith('.rs'): continue
            p = os.path.join(dirpath, f)
            rel = os.path.relpath(p, src)
            top = rel.split(os.sep)[0].replace('.rs', '')
            if top == 'lib': continue
            if rel.endswith('tests.rs') or '/tests/' in rel or rel.endswith('testkit.rs') or rel.endswith('contract.rs'): continue
            text = open(p).read()
            # drop test modules at the end
            text = re.split(r'#\[cfg\(test\)\]\s*mod tests', text)[0]
            deps = mods.setdefault(top, set())
            for line in text.splitlines():
                s = line.strip()
                if s.startswith('//'): continue
                names = [m.group(1) for m in re.finditer(r'crate::(\w+)', s)]
                for g in re.finditer(r'crate::\{([^}]*)\}', s):
                    names += [x.strip().split('::')[0] for x in g.group(1).split(',') if x.strip()]
                for n in names:
                    t = n if n[0].islower() else reexp.get(n)
                    if t and t != top: deps.add(t)
    # Tarjan SCC
    idx = {}; low = {}; st = []; on = set(); out = []; c = [0]
    def sc(v):
        idx[v] = low[v] = c[0]; c[0] += 1; st.append(v); on.add(v)
        for w in mods.get(v, ()):
            if w not in mods: continue
            if w not in idx: sc(w); low[v] = min(low[v], low[w])
            elif w in on: low[v] = min(low[v], idx[w])
        if low[v] == idx[v]:
            comp = []
            while True:
                w = st.pop(); on.discard(w); comp.append(w)
                if w == v: break
            if len(comp) > 1: out.append(comp)
    sys.setrecursionlimit(10000)
    for v in list(mods): 
        if v not in idx: sc(v)
    return [(sorted(comp), {a: sorted(d for d in mods[a] if d in comp) for a in comp}) for comp in out]


found = False
for crate in sorted(glob.glob(os.path.join(os.path.dirname(__file__), '..', 'crates', '*'))):
    for comp, edges in circles(crate):
        found = True
        print(f"{os.path.basename(crate)}: import circle {comp}")
        for a in sorted(edges):
            print(f"  {a} -> {edges[a]}")
if found:
    sys.exit(1)
print("no import circles between the modules of any crate")
